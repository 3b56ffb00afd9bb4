"""The bottom layer: errors, atomic file writing, the model's shape (config) and the project's folders (paths).
Every other layer may import it; it imports none of them.
"""
