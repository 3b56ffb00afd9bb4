// peer_generate: llama.cpp's side of llmcu's peer benchmark (tools/bench.py --peer).
//
// It does what llmcu's own program does for a benchmark run, through llama.cpp's public API (llama.h), so
// the two can be counted and timed the same way: load a GGUF model, encode the prompt (BOS first), then one
// forward pass per position until `steps` positions are done, taking the greedy token each time, with the
// given number of threads. Like llmcu's -n, `steps` counts positions (prompt tokens included), and an
// end-of-text token does not stop the run, so that a run of n steps always does n - prompt single-token passes.
//
//   peer_generate -m model.gguf -p "Once upon a time" -n 256 -t 1
//
// stdout: the text. stderr, last line: "peer prompt_tokens=P generated=G seconds=S tok_per_s=R" where S is the
// wall time of the single-token passes (the prompt's batch is not in it) and R = G / S.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama.h"

namespace {

struct Options {
    std::string model;
    std::string prompt = "Once upon a time";
    int steps = 256;
    int threads = 1;
};

void print_peer_usage(const char *program) {
    std::fprintf(stderr, "usage: %s -m model.gguf [-p prompt] [-n steps] [-t threads]\n", program);
}

bool parse_peer_options(int argc, char **argv, Options &options) {
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) {
            return false;
        }
        const char *value = argv[++i];
        if (std::strcmp(flag, "-m") == 0) {
            options.model = value;
        } else if (std::strcmp(flag, "-p") == 0) {
            options.prompt = value;
        } else if (std::strcmp(flag, "-n") == 0) {
            options.steps = std::atoi(value);
        } else if (std::strcmp(flag, "-t") == 0) {
            options.threads = std::atoi(value);
        } else {
            return false;
        }
    }
    return !options.model.empty() && options.steps > 0 && options.threads > 0;
}

// llama.cpp logs model loading at length; the benchmark wants its own line only, errors excepted.
void quiet_log(ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

}  // namespace

int main(int argc, char **argv) {
    Options options;
    if (!parse_peer_options(argc, argv, options)) {
        print_peer_usage(argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();

    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    llama_model *model = llama_model_load_from_file(options.model.c_str(), model_params);
    if (model == nullptr) {
        std::fprintf(stderr, "peer_generate: cannot load %s\n", options.model.c_str());
        return 1;
    }
    const llama_vocab *vocab = llama_model_get_vocab(model);

    // The prompt's tokens, BOS first as llmcu's encoder puts it.
    const int needed = -llama_tokenize(vocab, options.prompt.c_str(), (int32_t)options.prompt.size(), nullptr, 0, true, false);
    std::vector<llama_token> tokens(needed > 0 ? needed : 1);
    const int n_prompt = llama_tokenize(vocab, options.prompt.c_str(), (int32_t)options.prompt.size(), tokens.data(),
                                        (int32_t)tokens.size(), true, false);
    if (n_prompt <= 0 || n_prompt >= options.steps) {
        std::fprintf(stderr, "peer_generate: the prompt has %d tokens, the run %d steps\n", n_prompt, options.steps);
        return 1;
    }

    llama_context_params context_params = llama_context_default_params();
    context_params.n_ctx = (uint32_t)options.steps;
    context_params.n_batch = (uint32_t)n_prompt;
    context_params.n_threads = options.threads;
    context_params.n_threads_batch = options.threads;
    context_params.no_perf = true;
    llama_context *context = llama_init_from_model(model, context_params);
    if (context == nullptr) {
        std::fprintf(stderr, "peer_generate: cannot make a context of %d positions\n", options.steps);
        return 1;
    }
    llama_sampler *sampler = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(sampler, llama_sampler_init_greedy());

    if (llama_decode(context, llama_batch_get_one(tokens.data(), n_prompt)) != 0) {
        std::fprintf(stderr, "peer_generate: the prompt's pass failed\n");
        return 1;
    }
    llama_token next = llama_sampler_sample(sampler, context, -1);

    int generated = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int pos = n_prompt;; pos++) {
        char piece[256];
        const int length = llama_token_to_piece(vocab, next, piece, sizeof piece, 0, false);
        if (length > 0) {
            std::fwrite(piece, 1, (size_t)length, stdout);
        }
        if (pos == options.steps) {
            break;  // as llmcu (and run.c) do, the token chosen at the last position is shown, not fed
        }
        if (llama_decode(context, llama_batch_get_one(&next, 1)) != 0) {
            std::fprintf(stderr, "peer_generate: the pass at position %d failed\n", pos);
            return 1;
        }
        next = llama_sampler_sample(sampler, context, -1);
        generated++;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "peer prompt_tokens=%d generated=%d seconds=%.6f tok_per_s=%.2f\n", n_prompt, generated,
                 seconds, seconds > 0 ? generated / seconds : 0.0);

    llama_sampler_free(sampler);
    llama_free(context);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
