// The step-wise API from C++: llmcu.h declares it extern "C", so a C++ application links the C runtime as is.
#include <cstdio>
#include <string>

#include "llmcu.h"

int main(int argc, char **argv) {
    llmcu_params params = {};
    params.steps = argc > 2 ? std::stoi(argv[2]) : 32;
    llmcu_gen gen;
    int rc = llmcu_begin(&gen, argc > 1 ? argv[1] : "", &params);
    std::string text;
    const char *piece = nullptr;
    size_t len = 0;
    while (rc == LLMCU_OK && (rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
        text.append(piece, len);
    }
    if (rc < 0) {
        std::fprintf(stderr, "%s\n", llmcu_strerror(rc));
        return 1;
    }
    std::printf("%s\n", text.c_str());
    return 0;
}
