// A thin shim over Zydis: decode one instruction and flatten what the prologue relocator
// needs into hk_insn. No policy here; Relocator.swift decides what is safe to move.
#include "hk_zydis.h"
#include <Zydis/Zydis.h>
#include <string.h>

// Only a relative *immediate* makes a branch: Zydis also marks [rip+disp] operands relative.
static uint8_t branch_kind(const ZydisDecodedInstruction *in, const ZydisDecodedOperand *ops) {
    int has_rel_imm = 0;
    for (int i = 0; i < in->operand_count; i++)
        if (ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && ops[i].imm.is_relative) has_rel_imm = 1;
    if (!has_rel_imm) return HK_BRANCH_NONE;
    switch (in->mnemonic) {
    case ZYDIS_MNEMONIC_JMP: return HK_BRANCH_JMP;
    case ZYDIS_MNEMONIC_CALL: return HK_BRANCH_CALL;
    case ZYDIS_MNEMONIC_LOOP:
    case ZYDIS_MNEMONIC_LOOPE:
    case ZYDIS_MNEMONIC_LOOPNE:
    case ZYDIS_MNEMONIC_JRCXZ:
    case ZYDIS_MNEMONIC_JECXZ: return HK_BRANCH_LOOP;
    default: break;
    }
    // jcc: 0x70-0x7f (rel8) or 0x0f 0x80-0x8f (rel32); anything else relative is "other".
    if (in->meta.category == ZYDIS_CATEGORY_COND_BR &&
        ((in->opcode_map == ZYDIS_OPCODE_MAP_DEFAULT && (in->opcode & 0xf0) == 0x70) ||
         (in->opcode_map == ZYDIS_OPCODE_MAP_0F && (in->opcode & 0xf0) == 0x80)))
        return HK_BRANCH_JCC;
    return HK_BRANCH_OTHER;
}

// One 64-bit instruction with all its operands (hidden ones included). 0, or -1.
static int decode_full(const uint8_t *code, size_t len, ZydisDecodedInstruction *in, ZydisDecodedOperand *ops) {
    ZydisDecoder dec;
    if (ZYAN_FAILED(ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64))) return -1;
    return ZYAN_FAILED(ZydisDecoderDecodeFull(&dec, code, len, in, ops)) ? -1 : 0;
}

int hk_decode_insn(const uint8_t *code, size_t len, uint64_t address, hk_insn *out) {
    memset(out, 0, sizeof *out);
    ZydisDecodedInstruction in;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    if (decode_full(code, len, &in, ops) != 0) return -1;

    out->length = in.length;
    out->branch = branch_kind(&in, ops);
    out->cond = out->branch == HK_BRANCH_JCC ? (in.opcode & 0x0f) : 0;
    out->is_endbr64 = in.mnemonic == ZYDIS_MNEMONIC_ENDBR64;
    out->is_nop = in.mnemonic == ZYDIS_MNEMONIC_NOP;
    out->is_int3 = in.mnemonic == ZYDIS_MNEMONIC_INT3;
    out->ends_flow = in.meta.category == ZYDIS_CATEGORY_RET || in.meta.category == ZYDIS_CATEGORY_UNCOND_BR;

    for (int i = 0; i < in.operand_count; i++) {
        const ZydisDecodedOperand *op = &ops[i];
        ZyanU64 abs = 0;
        if (op->type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op->imm.is_relative && out->branch != HK_BRANCH_NONE) {
            if (ZYAN_FAILED(ZydisCalcAbsoluteAddress(&in, op, address, &abs))) return -1;
            out->branch_target = abs;
            out->rel_offset = in.raw.imm[0].offset;
            out->rel_size = in.raw.imm[0].size / 8;
        } else if (op->type == ZYDIS_OPERAND_TYPE_MEMORY && op->mem.base == ZYDIS_REGISTER_RIP) {
            if (ZYAN_FAILED(ZydisCalcAbsoluteAddress(&in, op, address, &abs))) return -1;
            out->rip_relative = 1;
            out->rip_target = abs;
            out->disp_offset = in.raw.disp.offset;
            out->disp_size = in.raw.disp.size / 8;
        }
    }

    // Intel syntax as objdump prints it: [rip+0x10], branch targets absolute, lowercase hex, no padding.
    ZydisFormatter fmt;
    if (ZYAN_SUCCESS(ZydisFormatterInit(&fmt, ZYDIS_FORMATTER_STYLE_INTEL))) {
        ZydisFormatterSetProperty(&fmt, ZYDIS_FORMATTER_PROP_FORCE_RELATIVE_RIPREL, ZYAN_TRUE);
        ZydisFormatterSetProperty(&fmt, ZYDIS_FORMATTER_PROP_ADDR_PADDING_ABSOLUTE, ZYDIS_PADDING_DISABLED);
        ZydisFormatterSetProperty(&fmt, ZYDIS_FORMATTER_PROP_IMM_PADDING, ZYDIS_PADDING_DISABLED);
        ZydisFormatterSetProperty(&fmt, ZYDIS_FORMATTER_PROP_DISP_PADDING, ZYDIS_PADDING_DISABLED);
        ZydisFormatterSetProperty(&fmt, ZYDIS_FORMATTER_PROP_HEX_UPPERCASE, ZYAN_FALSE);
        ZydisFormatterFormatInstruction(&fmt, &in, ops, in.operand_count_visible, out->text,
                                        sizeof out->text, address, NULL);
    }
    return 0;
}

size_t hk_branch_targets(const uint8_t *code, size_t len, uint64_t address,
                         uint64_t *targets, uint64_t *sources, size_t max) {
    ZydisDecoder dec;
    if (ZYAN_FAILED(ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64))) return 0;
    size_t n = 0, off = 0;
    while (off < len && n < max) {
        ZydisDecodedInstruction in;
        if (ZYAN_FAILED(ZydisDecoderDecodeInstruction(&dec, NULL, code + off, len - off, &in))) { off++; continue; }
        if (in.meta.branch_type != ZYDIS_BRANCH_TYPE_NONE && (in.attributes & ZYDIS_ATTRIB_IS_RELATIVE) &&
            in.raw.imm[0].is_relative) {
            uint64_t target = address + off + in.length + (uint64_t)in.raw.imm[0].value.s;
            if (target >= address && target < address + len) {
                targets[n] = target;
                sources[n] = address + off;
                n++;
            }
        }
        off += in.length;
    }
    return n;
}

// One register operand into hk_writes classes: general registers by their 64-bit container,
// vector registers by number whatever their width, x87/MMX and mask registers as one class each.
static uint64_t register_class_bit(ZydisRegister reg) {
    ZydisRegister big = ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, reg);
    ZyanI8 id = ZydisRegisterGetId(reg);
    switch (ZydisRegisterGetClass(reg)) {
    case ZYDIS_REGCLASS_GPR8:
    case ZYDIS_REGCLASS_GPR16:
    case ZYDIS_REGCLASS_GPR32:
    case ZYDIS_REGCLASS_GPR64: {
        ZyanI8 gid = ZydisRegisterGetId(big);
        return gid >= 0 && gid < 16 ? (uint64_t)1 << gid : 0;
    }
    case ZYDIS_REGCLASS_XMM:
    case ZYDIS_REGCLASS_YMM:
    case ZYDIS_REGCLASS_ZMM: return id >= 0 && id < 32 ? (uint64_t)1 << (16 + id) : 0;
    case ZYDIS_REGCLASS_X87:
    case ZYDIS_REGCLASS_MMX: return (uint64_t)1 << HK_WRITES_X87;
    case ZYDIS_REGCLASS_MASK: return (uint64_t)1 << HK_WRITES_MASK;
    default: break;
    }
    // MXCSR (ldmxcsr, vldmxcsr) is vector state a caller relies on: counted as all of it.
    if (reg == ZYDIS_REGISTER_MXCSR) return (uint64_t)1 << HK_WRITES_ALL_VECTOR;
    // x87 control, status and tag words are not in a class of their own.
    if (reg == ZYDIS_REGISTER_X87CONTROL || reg == ZYDIS_REGISTER_X87STATUS || reg == ZYDIS_REGISTER_X87TAG)
        return (uint64_t)1 << HK_WRITES_X87;
    return 0;
}

static int replaces_vector_state(ZydisMnemonic m) {
    switch (m) {
    case ZYDIS_MNEMONIC_VZEROALL: case ZYDIS_MNEMONIC_VZEROUPPER:
    case ZYDIS_MNEMONIC_XRSTOR: case ZYDIS_MNEMONIC_XRSTOR64: case ZYDIS_MNEMONIC_XRSTORS:
    case ZYDIS_MNEMONIC_XRSTORS64: case ZYDIS_MNEMONIC_FXRSTOR: case ZYDIS_MNEMONIC_FXRSTOR64:
    case ZYDIS_MNEMONIC_FRSTOR: case ZYDIS_MNEMONIC_FNINIT: case ZYDIS_MNEMONIC_EMMS:
        return 1;
    default: return 0;
    }
}

static int8_t gpr64_id(ZydisRegister r) {
    if (ZydisRegisterGetClass(r) != ZYDIS_REGCLASS_GPR64) return -1;
    return ZydisRegisterGetId(r);
}

// 64-bit `lea reg, [m]` and `mov reg, [m]`, and what an indirect call/jmp goes through.
static void describe_pointer_use(const ZydisDecodedInstruction *in, const ZydisDecodedOperand *ops,
                                 uint64_t address, hk_writes *out) {
    out->dest = out->base = out->via = -1;
    const ZydisDecodedOperand *mem = NULL;
    if ((in->mnemonic == ZYDIS_MNEMONIC_LEA || in->mnemonic == ZYDIS_MNEMONIC_MOV) && in->operand_count_visible == 2 &&
        ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER && ops[1].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        out->dest = gpr64_id(ops[0].reg.value);
        if (out->dest >= 0) {
            out->op = in->mnemonic == ZYDIS_MNEMONIC_LEA ? HK_OP_LEA : HK_OP_LOAD;
            mem = &ops[1];
        }
    } else if ((in->meta.category == ZYDIS_CATEGORY_CALL || in->meta.category == ZYDIS_CATEGORY_UNCOND_BR) &&
               in->operand_count_visible > 0) {
        if (ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER) out->via = gpr64_id(ops[0].reg.value);
        else if (ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) mem = &ops[0];
    }
    if (!mem) return;
    int simple = mem->mem.index == ZYDIS_REGISTER_NONE &&
                 (mem->mem.segment == ZYDIS_REGISTER_DS || mem->mem.segment == ZYDIS_REGISTER_NONE);
    if (mem->mem.base == ZYDIS_REGISTER_RIP) {
        ZyanU64 abs = 0;
        if (simple && ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(in, mem, address, &abs))) {
            out->base = HK_BASE_RIP;
            out->address = abs;
            out->plain = 1;
        }
    } else {
        out->base = gpr64_id(mem->mem.base);
        out->plain = simple && out->base >= 0 && (!mem->mem.disp.has_displacement || mem->mem.disp.value == 0);
    }
}

int hk_decode_writes(const uint8_t *code, size_t len, uint64_t address, hk_writes *out) {
    memset(out, 0, sizeof *out);
    ZydisDecodedInstruction in;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    if (decode_full(code, len, &in, ops) != 0) return -1;
    out->length = in.length;
    for (int i = 0; i < in.operand_count; i++)
        if (ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER && (ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
            out->written |= register_class_bit(ops[i].reg.value);
    if (replaces_vector_state(in.mnemonic)) out->written |= (uint64_t)1 << HK_WRITES_ALL_VECTOR;

    describe_pointer_use(&in, ops, address, out);
    const ZydisDecodedOperand *target = in.operand_count_visible > 0 ? &ops[0] : NULL;
    int relative = target && target->type == ZYDIS_OPERAND_TYPE_IMMEDIATE && target->imm.is_relative;
    if (relative) {
        ZyanU64 abs = 0;
        if (ZYAN_FAILED(ZydisCalcAbsoluteAddress(&in, target, address, &abs))) return -1;
        out->target = abs;
    }
    if (!relative && target && target->type == ZYDIS_OPERAND_TYPE_MEMORY && target->mem.base == ZYDIS_REGISTER_RIP &&
        target->mem.index == ZYDIS_REGISTER_NONE) {
        ZyanU64 abs = 0;
        if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&in, target, address, &abs))) { out->target = abs; out->through_rip = 1; }
    }
    switch (in.meta.category) {
    case ZYDIS_CATEGORY_RET: out->flow = HK_FLOW_RET; break;
    case ZYDIS_CATEGORY_CALL: out->flow = relative ? HK_FLOW_CALL : HK_FLOW_CALL_INDIRECT; break;
    case ZYDIS_CATEGORY_COND_BR: out->flow = relative ? HK_FLOW_JCC : HK_FLOW_STOP; break;
    case ZYDIS_CATEGORY_UNCOND_BR:
        if (relative) out->flow = HK_FLOW_JMP;
        else if (target && target->type == ZYDIS_OPERAND_TYPE_MEMORY && target->mem.base != ZYDIS_REGISTER_NONE)
            out->flow = HK_FLOW_JMP_POINTER;
        else out->flow = HK_FLOW_JMP_REGISTER;
        break;
    default:
        if (in.mnemonic == ZYDIS_MNEMONIC_UD2 || in.mnemonic == ZYDIS_MNEMONIC_HLT || in.mnemonic == ZYDIS_MNEMONIC_INT3)
            out->flow = HK_FLOW_STOP;
        break;
    }
    return 0;
}

int hk_decode_stack_use(const uint8_t *code, size_t len, uint64_t address, hk_stack_use *out) {
    memset(out, 0, sizeof *out);
    hk_writes w;
    if (hk_decode_writes(code, len, address, &w) != 0) return -1;
    out->length = w.length;
    out->flow = w.flow;
    out->target = w.target;
    ZydisDecodedInstruction in;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    if (decode_full(code, len, &in, ops) != 0) return -1;
    for (int i = 0; i < in.operand_count && out->count < 2; i++) {
        const ZydisDecodedOperand *op = &ops[i];
        if (op->type != ZYDIS_OPERAND_TYPE_MEMORY) continue;
        hk_memop *m = &out->mem[out->count++];
        m->base = op->mem.base == ZYDIS_REGISTER_RIP ? HK_BASE_RIP
                : op->mem.base == ZYDIS_REGISTER_NONE ? -1 : gpr64_id(op->mem.base);
        m->has_index = op->mem.index != ZYDIS_REGISTER_NONE;
        m->is_address = op->mem.type == ZYDIS_MEMOP_TYPE_AGEN;
        m->size = m->is_address ? 0 : (uint16_t)((op->size + 7) / 8);
        m->disp = op->mem.disp.has_displacement ? op->mem.disp.value : 0;
    }
    return 0;
}
