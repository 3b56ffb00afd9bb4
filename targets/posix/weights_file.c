/*
 * The weights file of a weights_file=yes build: model.bin, written by site_scons/llmcu/builder/weightsfile.py.
 *
 * A 64-byte little-endian header, then model_data.bin exactly as the linked-in builds embed it:
 *
 *    0  magic "LLMCU-WF"          24  u64 data bytes
 *    8  u32 format version (1)    32  u32 CRC-32 of the data
 *   12  u32 header bytes (64)     36  u32 reserved (0)
 *   16  u64 layout hash           40  char[20] label ("<model> <quant>", NUL-padded)
 *                                 60  u32 CRC-32 of bytes 0..59
 *
 * The layout hash (FNV-1a 64) covers the model's shape, quantization and the offset, size and type of
 * every array in the data; the generated model_config.h carries the hash and the data size this program was
 * built for, and the generated model_weights.c points every tensor at its offset in a page-aligned region
 * the build reserved (model_data.S). The file is mapped read-only over that region (MAP_FIXED), so the
 * weights are demand-paged from the file and the runtime's descriptors stay compile-time constants.
 *
 * Everything is checked before the file is mapped, cheapest first: that it is a regular file, its magic,
 * the header's own checksum, the format version and header size, the layout hash and data size this
 * program was built for (so a file of another model shape or quantization is refused by name), the file's
 * size, and finally the data's CRC-32, read through once with pread. Only a file that passed all of them
 * is mapped; a refused one leaves the region untouched (zero pages) and the program exits.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#endif

#include "posix.h"

#ifndef LLMCU_WEIGHTS_FILE
#define LLMCU_WEIGHTS_FILE 0
#endif

#define WF_MAGIC "LLMCU-WF"
#define WF_VERSION 1u
#define WF_HEADER_BYTES 64u
#define WF_REGION_ALIGN 65536u /* model_data.S aligns and pads the region to this (any page size up to 64K) */

/* ---- CRC-32 (reflected polynomial 0xEDB88320, zlib's crc32) ---- */

#if !defined(__ARM_FEATURE_CRC32)
static uint32_t crc_table[256];

static void crc_table_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
}
#endif

uint32_t posix_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    crc = ~crc;
#if defined(__ARM_FEATURE_CRC32)
    /* ARMv8 CRC32 instructions (Cortex-A55 has them): 8 bytes per instruction, the same polynomial. */
    for (; len > 0 && ((uintptr_t)data & 7u) != 0; len--) {
        crc = __crc32b(crc, *data++);
    }
    for (; len >= 8; len -= 8, data += 8) {
        uint64_t word;
        memcpy(&word, data, sizeof word);
        crc = __crc32d(crc, word);
    }
    for (; len > 0; len--) {
        crc = __crc32b(crc, *data++);
    }
#else
    if (crc_table[1] == 0) {
        crc_table_init();
    }
    for (; len > 0; len--) {
        crc = crc_table[(crc ^ *data++) & 0xFFu] ^ (crc >> 8);
    }
#endif
    return ~crc;
}

#if LLMCU_WEIGHTS_FILE

#if LLMCU_WF_VERSION != 1 || LLMCU_WF_HEADER_BYTES != 64
#error "model_config.h was generated for another weights file format than this weights_file.c reads"
#endif

/* model_data.S: LLMCU_WF_REGION_BYTES of .bss, aligned to 64K, that the file is mapped over. */
extern const uint8_t llmcu_weights_file_region[];

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* model.bin in the program's own directory (/proc/self/exe; qemu-user reports the guest program). */
static const char *default_path(char *buf, size_t size) {
    static const char name[] = "model.bin";
    ssize_t n = readlink("/proc/self/exe", buf, size);
    if (n > 0 && (size_t)n + sizeof name < size) {
        buf[n] = '\0';
        char *slash = strrchr(buf, '/');
        if (slash != NULL) {
            memcpy(slash + 1, name, sizeof name);
            return buf;
        }
    }
    return name;
}

/* The CRC-32 of bytes [offset, offset + len) of fd, read in chunks; 0 and *crc set, or -1 on a read error or
 * an early end of file (the file shrank since fstat). */
static int file_crc32(int fd, off_t offset, uint64_t len, uint32_t *crc) {
    static uint8_t chunk[1u << 16];
    uint32_t sum = 0;
    while (len > 0) {
        size_t want = len < sizeof chunk ? (size_t)len : sizeof chunk;
        ssize_t got = pread(fd, chunk, want, offset);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return -1;
        }
        sum = posix_crc32(sum, chunk, (size_t)got);
        offset += (off_t)got;
        len -= (uint64_t)got;
    }
    *crc = sum;
    return 0;
}

static int refuse(int fd) {
    if (fd >= 0) {
        close(fd);
    }
    return POSIX_EXIT_WEIGHTS;
}

int posix_map_weights(const char *path) {
    char buf[4096];
    if (path == NULL) {
        path = default_path(buf, sizeof buf);
    }
    const char *me = posix_program;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "%s: cannot open the weights file %s: %s\n", me, path, strerror(errno));
        return refuse(-1);
    }
    struct stat st;
    uint8_t header[WF_HEADER_BYTES];
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "%s: the weights file %s is not a regular file%s\n", me, path,
                S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
        return refuse(fd);
    }
    if (st.st_size < (off_t)WF_HEADER_BYTES || pread(fd, header, sizeof header, 0) != (ssize_t)sizeof header) {
        fprintf(stderr, "%s: %s is not an llmcu weights file (%lld bytes, shorter than the %u-byte header%s)\n", me,
                path, (long long)st.st_size, WF_HEADER_BYTES, st.st_size == 0 ? ": it is empty" : "");
        return refuse(fd);
    }
    if (memcmp(header, WF_MAGIC, 8) != 0) {
        fprintf(stderr, "%s: %s is not an llmcu weights file (it does not start with \"" WF_MAGIC "\")\n", me, path);
        return refuse(fd);
    }
    if (posix_crc32(0, header, 60) != le32(header + 60)) {
        fprintf(stderr, "%s: %s is corrupt: its header's checksum does not match\n", me, path);
        return refuse(fd);
    }
    uint32_t version = le32(header + 8);
    if (version != WF_VERSION || le32(header + 12) != WF_HEADER_BYTES) {
        fprintf(stderr, "%s: %s is weights file format %u with a %u-byte header; this program reads format %u "
                "(%u bytes)\n", me, path, (unsigned)version, (unsigned)le32(header + 12), WF_VERSION, WF_HEADER_BYTES);
        return refuse(fd);
    }
    uint64_t layout = le64(header + 16);
    uint64_t data_bytes = le64(header + 24);
    uint32_t data_crc = le32(header + 32);
    char label[21];
    memcpy(label, header + 40, 20);
    label[20] = '\0';
    if (layout != LLMCU_WF_LAYOUT_HASH || data_bytes != LLMCU_WF_DATA_BYTES) {
        fprintf(stderr,
                "%s: %s does not belong to this program: it holds '%s' (layout %016llx, %llu bytes of data), "
                "this program was built for '%s' (layout %016llx, %llu bytes); use the model.bin built with it\n",
                me, path, label, (unsigned long long)layout, (unsigned long long)data_bytes, LLMCU_WF_LABEL,
                (unsigned long long)LLMCU_WF_LAYOUT_HASH, (unsigned long long)LLMCU_WF_DATA_BYTES);
        return refuse(fd);
    }
    if ((uint64_t)st.st_size != WF_HEADER_BYTES + data_bytes) {
        fprintf(stderr, "%s: %s is %lld bytes, but its header says %llu: the file is %s\n", me, path,
                (long long)st.st_size, (unsigned long long)(WF_HEADER_BYTES + data_bytes),
                (uint64_t)st.st_size < WF_HEADER_BYTES + data_bytes ? "truncated" : "longer than written");
        return refuse(fd);
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || WF_REGION_ALIGN % (unsigned long)page != 0) {
        fprintf(stderr, "%s: pages of %ld bytes do not divide the 64K alignment of the weights region\n", me, page);
        return refuse(fd);
    }
    uint32_t crc;
    errno = 0; /* an early end of file sets none */
    if (file_crc32(fd, (off_t)WF_HEADER_BYTES, data_bytes, &crc) != 0) {
        fprintf(stderr, "%s: cannot read %s: %s\n", me, path, errno != 0 ? strerror(errno) : "it ended early");
        return refuse(fd);
    }
    if (crc != data_crc) {
        fprintf(stderr, "%s: %s is corrupt: the CRC-32 of its data is %08x, its header says %08x\n", me, path,
                (unsigned)crc, (unsigned)data_crc);
        return refuse(fd);
    }
    void *region = (void *)llmcu_weights_file_region;
    void *mapped = mmap(region, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    if (mapped != region) {
        fprintf(stderr, "%s: cannot map %s: %s\n", me, path, strerror(errno));
        return refuse(fd);
    }
    close(fd);
    return 0;
}

#endif /* LLMCU_WEIGHTS_FILE */
