/*
 * The pieces of the STM32H7 board layer and how they call each other. board.c implements the shared
 * Cortex-M interface (../cortex-m/board.h) from these.
 */
#ifndef LLMCU_H7BOARD_H
#define LLMCU_H7BOARD_H

#include <stddef.h>
#include <stdint.h>

#include "board_config.h"

/* clock.c: supply, voltage scale, HSE, PLL1, flash wait states, bus dividers, SYSCLK = PLL1 P. */
void clock_init(void);

/* mpu_cache.c: MPU regions (external-memory guard, peripherals), then the L1 caches. The regions of the
 * external memories are added once each memory answers. */
void mpu_init(void);
void cache_enable(void);
void mpu_enable_sdram(void);
void mpu_enable_qspi(void);

/* gpio.c */
void gpio_enable_ports(uint32_t port_mask);
void gpio_set_af(uint32_t port, uint32_t pin, uint32_t af, uint32_t speed, uint32_t pull);

/* sdram.c and qspi.c: bring the external memories up (memory-mapped QSPI included). */
void sdram_init(void);
void qspi_init(void);

/* uart.c: the console. */
void uart_init(void);
void uart_write(const void *data, size_t len);
int uart_read_byte(uint32_t timeout_ms);
void uart_drain(void);

/* board.c: the DWT cycle counter, which also times the delays of early init. */
void dwt_start(void);
void delay_cycles(uint32_t cycles);

#endif /* LLMCU_H7BOARD_H */
