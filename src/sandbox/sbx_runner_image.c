/* sbx_runner_image.c: the runner program (sbx_runner_main.c, built first), carried inside agentd as read-only data, so
 * that agentd stays one file (sbx_runner.h). SBX_RUNNER_PATH is its path in the build tree, set by CMake. */
#include "sandbox/sbx_runner.h"

#ifndef SBX_RUNNER_PATH
#error "SBX_RUNNER_PATH: the runner's path in the build tree (CMakeLists.txt sets it)"
#endif
__asm__(".section .rodata\n"
        ".balign 64\n"
        ".globl sbx_runner_image\n"
        ".type sbx_runner_image, @object\n"
        "sbx_runner_image:\n"
        ".incbin \"" SBX_RUNNER_PATH "\"\n"
        ".globl sbx_runner_image_end\n"
        ".type sbx_runner_image_end, @object\n"
        "sbx_runner_image_end:\n"
        ".byte 0\n"
        ".previous\n");
