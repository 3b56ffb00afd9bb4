"""SCons glue for llmcu: turns the library's build settings into SCons nodes. No build logic lives here.

SConstruct loads it with ``env.Tool("llmcu_scons")`` and then calls ``env.LlmcuBuild(ARGUMENTS)``.
"""

from __future__ import annotations

import sys

import SCons.Script as scons
from SCons.Variables import EnumVariable, Variables

from llmcu import codegen, project, steps
from llmcu.errors import LlmcuError


def _fail(error: Exception) -> None:
    print(f"llmcu: error: {error}", file=sys.stderr)
    scons.Exit(2)


def _variables(table: list) -> Variables:
    variables = Variables(None, scons.ARGUMENTS)
    for option in table:
        help_text = option.help
        if option.allowed is not None:
            variables.Add(EnumVariable(option.name, help_text, option.default, allowed_values=option.allowed))
        else:
            variables.Add(option.name, f"{help_text} ({option.allowed_text})", option.default)
    return variables


def _model_sources(env, settings: project.BuildSettings) -> list:
    """The generated C and data, rebuilt when the model files, the options or the generator change."""
    gen = settings.gen_dir
    targets = [gen / name for name in codegen.GENERATED_FILES]
    targets += [settings.out_dir / "quant_report.json", settings.out_dir / "quant_report.md"]
    identity = env.Value(f"{settings.model_name}|{settings.plan!r}|{settings.seq_len}|{settings.target.kind}")
    sources = [str(settings.checkpoint), str(settings.tokenizer), identity]
    sources += [str(path) for path in sorted(project.TEMPLATES_DIR.glob("*.j2"))]
    sources += [str(path) for path in sorted(project.LIBRARY_DIR.glob("*.py"))]

    def action(target, source, env):
        try:
            steps.generate_sources(settings)
        except LlmcuError as error:
            print(f"llmcu: error: {error}", file=sys.stderr)
            return 1
        return 0

    return env.Command(
        [str(path) for path in targets],
        sources,
        env.Action(action, "Generating model sources in $TARGET.dir"),
    )


def _program(env, settings: project.BuildSettings, generated: list):
    target = settings.target
    gen = settings.gen_dir
    build_env = env.Clone(
        CC=target.cc,
        CCFLAGS=list(target.all_cflags),
        LINKFLAGS=list(target.ldflags),
        LIBS=list(target.libs),
        CPPPATH=[str(project.RUNTIME_DIR), str(gen)],
        CPPDEFINES=[("LLMCU_TARGET_NAME", f'\\"{target.name}\\"')],
        ASFLAGS=[f"-Wa,-I{gen}"],
    )
    objects = []
    sources = [(path, path.relative_to(project.ROOT)) for path in project.runtime_sources()]
    sources += [(path, path.relative_to(project.ROOT)) for path in target.board_sources]
    sources += [(gen / "model_weights.c", "gen/model_weights.c"), (gen / "model_data.S", "gen/model_data.S")]
    for path, rel in sources:
        stem = str(rel).rsplit(".", 1)[0]
        objects += build_env.Object(str(settings.obj_dir / stem), str(path))
    build_env.Depends(objects, generated)
    return build_env.Program(str(settings.out_dir / "llmcu"), objects)


def _run_alias(env, settings: project.BuildSettings, program) -> None:
    def action(target, source, env):
        try:
            steps.run_host_program(settings.out_dir / "llmcu", settings.run.program_args())
        except LlmcuError as error:
            print(f"llmcu: error: {error}", file=sys.stderr)
            return 1
        return 0

    run = env.Alias("run", program, env.Action(action, "Running $SOURCE"))
    env.AlwaysBuild(run)


def llmcu_build(env, arguments: dict[str, str]):
    """Declare the whole build for the given command-line options; returns the program node."""
    table = project.options_table()
    variables = _variables(table)
    variables.Update(env)
    scons.Help(project.help_intro() + variables.GenerateHelpText(env), append=False)
    if scons.GetOption("help"):
        return None
    try:
        settings = project.configure(dict(arguments))
    except LlmcuError as error:
        _fail(error)
        return None
    if settings.target.run_method != "exec":
        _fail(LlmcuError(f"target {settings.target.name!r} is not buildable yet"))
    generated = _model_sources(env, settings)
    program = _program(env, settings, generated)
    env.Default(program)
    env.Alias("build", program)
    _run_alias(env, settings, program)
    out = settings.out_dir
    shown = out.relative_to(project.ROOT) if out.is_relative_to(project.ROOT) else out
    print(f"llmcu: {settings.target.name} {settings.model_name} {settings.plan.name} -> {shown}")
    return program


def generate(env) -> None:
    env.AddMethod(llmcu_build, "LlmcuBuild")


def exists(env) -> bool:
    return True
