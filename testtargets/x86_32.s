# A 32-bit x86 process (no libc needed): hookit must refuse it as not x86-64.
.code32
.globl _start
_start:
1:  movl $29, %eax      # pause()
    int  $0x80
    jmp  1b
