/*
 * GPIO alternate functions (RM0433 section "General-purpose I/Os"). Pins come from board_config.h as
 * (port index, pin, alternate function), so the pin map of a board is data.
 */
#include "h7board.h"
#include "stm32h7.h"

void gpio_enable_ports(uint32_t port_mask)
{
    RCC_AHB4ENR |= port_mask;
    /* A peripheral's registers answer only a few cycles after its clock is enabled (RM0433 RCC,
     * "peripheral clock enable"): reading the enable register back waits for the write to land. */
    (void)RCC_AHB4ENR;
    dsb();
}

void gpio_set_af(uint32_t port, uint32_t pin, uint32_t af, uint32_t speed, uint32_t pull)
{
    uint32_t shift2 = 2u * pin;
    uint32_t shift4 = 4u * (pin & 7u);

    GPIO_OSPEEDR(port) = (GPIO_OSPEEDR(port) & ~(3u << shift2)) | (speed << shift2);
    GPIO_OTYPER(port) &= ~(1u << pin); /* push-pull */
    GPIO_PUPDR(port) = (GPIO_PUPDR(port) & ~(3u << shift2)) | (pull << shift2);
    if (pin < 8u) {
        GPIO_AFRL(port) = (GPIO_AFRL(port) & ~(0xFu << shift4)) | (af << shift4);
    } else {
        GPIO_AFRH(port) = (GPIO_AFRH(port) & ~(0xFu << shift4)) | (af << shift4);
    }
    /* The mode last: the pin leaves its reset (analog) state only once its function is selected, so it
     * never drives another alternate function, even briefly. */
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << shift2)) | (GPIO_MODE_AF << shift2);
}
