/*
 * llmcu_insn: a QEMU TCG plugin (user mode) that counts the guest's executed instructions and hands the
 * running count to the guest program whenever it asks, so the runtime's per-token cost is an exact
 * instruction count under qemu-aarch64 (targets/rzv2l/board.c is the guest side).
 *
 *   qemu-aarch64 -plugin libllmcu_insn.so,fd=N[,inline=on][,out=FILE] -E LLMCU_COUNTER_FD=N program ...
 *
 * How the guest reads the count: at load time the plugin makes a pipe and puts its read end at descriptor
 * N of the (shared) process, which the guest inherits since qemu-user passes descriptors through. When the
 * guest calls read(N, &count, 8), the plugin's system-call callback, which QEMU runs before it performs the
 * call, writes the current count into the pipe; the read then returns it. No guest memory or register is
 * touched, so it works with the API QEMU 7.2 has.
 *
 * Counting: each translation block adds its instruction count when it starts executing. A block ends at
 * a system call instruction, so the count a read returns includes everything up to and including its svc.
 * By default every vCPU (guest thread) counts into a slot of its own through a callback and the count
 * handed out is the sum: exact for any number of threads, though with several threads the total depends on
 * how long they spun waiting for each other. inline=on adds into one shared counter with generated code
 * instead of a callback: faster, exact for a single-threaded guest, racy with threads.
 *
 * out=FILE writes "instructions <total>" there when the guest exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_VCPUS 64

/* One cache line per vCPU, so threads do not contend for each other's counters. */
typedef struct {
    uint64_t count;
    char pad[56];
} vcpu_slot;

static vcpu_slot slots[MAX_VCPUS];
static uint64_t overflow;     /* vCPUs past MAX_VCPUS (atomic adds) */
static uint64_t inline_count; /* inline=on: updated by generated code */
static int use_inline;
static int guest_fd = -1;
static int pipe_write = -1;
static int64_t read_syscall = -1;
static char out_path[1024];

static uint64_t total(void) {
    if (use_inline) {
        return __atomic_load_n(&inline_count, __ATOMIC_RELAXED);
    }
    uint64_t sum = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
    for (int i = 0; i < MAX_VCPUS; i++) {
        sum += __atomic_load_n(&slots[i].count, __ATOMIC_RELAXED);
    }
    return sum;
}

static void tb_exec(unsigned int vcpu, void *userdata) {
    uint64_t n = (uint64_t)(uintptr_t)userdata;
    if (vcpu < MAX_VCPUS) { /* only this vCPU's thread writes its slot */
        uint64_t *count = &slots[vcpu].count;
        __atomic_store_n(count, __atomic_load_n(count, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    } else {
        __atomic_add_fetch(&overflow, n, __ATOMIC_RELAXED);
    }
}

static void tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (use_inline) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &inline_count, n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    (void)id, (void)vcpu, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num != read_syscall || a1 != (uint64_t)guest_fd) {
        return;
    }
    uint64_t count = total();
    const char *data = (const char *)&count;
    size_t left = sizeof count;
    while (left > 0) {
        ssize_t n = write(pipe_write, data, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            qemu_plugin_outs("llmcu_insn: cannot write the count to the guest's pipe\n");
            return;
        }
        data += n;
        left -= (size_t)n;
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id, (void)userdata;
    if (out_path[0] != '\0') {
        FILE *out = fopen(out_path, "w");
        if (out != NULL) {
            fprintf(out, "instructions %llu\n", (unsigned long long)total());
            fclose(out);
        }
    }
}

/* The number of read(2) for the guest architecture. */
static int64_t read_syscall_number(const char *target) {
    static const struct {
        const char *target;
        int64_t number;
    } table[] = {{"aarch64", 63}, {"riscv64", 63}, {"riscv32", 63}, {"x86_64", 0}, {"arm", 3}, {"i386", 3}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(target, table[i].target) == 0) {
            return table[i].number;
        }
    }
    return -1;
}

static int fail(const char *message) {
    char line[256];
    snprintf(line, sizeof line, "llmcu_insn: %s\n", message);
    qemu_plugin_outs(line);
    fputs(line, stderr);
    return -1;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    if (info->system_emulation) {
        return fail("user-mode emulation only (qemu-<arch>, not qemu-system-<arch>)");
    }
    read_syscall = read_syscall_number(info->target_name);
    if (read_syscall < 0) {
        return fail("unsupported guest architecture");
    }
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "fd=", 3) == 0) {
            char *end;
            long fd = strtol(arg + 3, &end, 10);
            if (*end != '\0' || fd < 3 || fd > 65535) {
                return fail("fd= needs a descriptor number from 3 to 65535");
            }
            guest_fd = (int)fd;
        } else if (strcmp(arg, "inline=on") == 0 || strcmp(arg, "inline=off") == 0) {
            use_inline = strcmp(arg, "inline=on") == 0;
        } else if (strncmp(arg, "out=", 4) == 0 && strlen(arg + 4) < sizeof out_path) {
            strcpy(out_path, arg + 4);
        } else {
            return fail("unknown argument (expected fd=N, inline=on|off, out=FILE)");
        }
    }
    if (guest_fd < 0) {
        return fail("fd=N is required: the descriptor the guest reads counts from");
    }
    if (fcntl(guest_fd, F_GETFD) != -1) {
        return fail("the descriptor given with fd= is already open");
    }
    int ends[2];
    if (pipe(ends) != 0) {
        return fail("cannot create a pipe");
    }
    if (dup2(ends[0], guest_fd) < 0) {
        return fail("cannot place the pipe at the descriptor given with fd=");
    }
    close(ends[0]);
    pipe_write = ends[1];
    fcntl(pipe_write, F_SETFD, FD_CLOEXEC);

    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
