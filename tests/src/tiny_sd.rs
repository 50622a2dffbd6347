//! A tiny random-weight Z-Image model that stable-diffusion.cpp accepts:
//! a one-layer DiT (hidden 256), a one-layer Qwen3 text encoder (hidden 64,
//! the real 151,936-token vocabulary) and a tiny autoencoder (TAESD shape,
//! 16 latent channels). About 31 MB, written in a fraction of a second.
//!
//! The weights are noise, so images are noise: tests check size, format,
//! determinism, progress and errors, not content. Shapes follow
//! stable-diffusion.cpp's `z_image.hpp`, `llm.hpp` (QWEN3: head_dim 128,
//! 32 heads, 8 KV heads are fixed) and `tae.hpp`; names are written without
//! the prefixes sd.cpp adds per file role.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The three files of the tiny model.
#[derive(Debug, Clone)]
pub struct TinyZImage {
    /// `diffusion-model` role.
    pub diffusion: PathBuf,
    /// `text-encoder` role (the LLM).
    pub text_encoder: PathBuf,
    /// `taesd` role.
    pub taesd: PathBuf,
}

enum Fill {
    /// Uniform noise in ±scale.
    Noise(f32),
    /// A constant (norm weights).
    Const(f32),
}

struct Tensor {
    name: String,
    /// PyTorch order (outermost first).
    shape: Vec<usize>,
    fill: Fill,
    /// Stored as F16 (else F32).
    f16: bool,
}

struct Writer {
    tensors: Vec<Tensor>,
}

impl Writer {
    fn new() -> Self {
        Self {
            tensors: Vec::new(),
        }
    }

    /// A tensor: 2-D and up as F16, 1-D as F32.
    fn add(&mut self, name: &str, shape: &[usize], fill: Fill) {
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            fill,
            f16: shape.len() > 1,
        });
    }

    /// A tensor stored as F32 whatever its rank.
    fn add_f32(&mut self, name: &str, shape: &[usize], fill: Fill) {
        self.add(name, shape, fill);
        if let Some(t) = self.tensors.last_mut() {
            t.f16 = false;
        }
    }

    /// `Conv2d(in, out, 1x1)` without bias.
    fn conv1(&mut self, name: &str, input: usize, out: usize) {
        let scale = 1.0 / (input as f32).sqrt();
        self.add(
            &format!("{name}.weight"),
            &[out, input, 1, 1],
            Fill::Noise(scale),
        );
    }

    /// `Linear(in, out)`: weight [out, in], optional bias [out].
    fn linear(&mut self, name: &str, input: usize, out: usize, bias: bool) {
        let scale = 1.0 / (input as f32).sqrt();
        self.add(&format!("{name}.weight"), &[out, input], Fill::Noise(scale));
        if bias {
            self.add(&format!("{name}.bias"), &[out], Fill::Noise(0.01));
        }
    }

    fn norm(&mut self, name: &str, dim: usize) {
        self.add(&format!("{name}.weight"), &[dim], Fill::Const(1.0));
    }

    /// `Conv2d(in, out, 3x3)`: weight [out, in, 3, 3], optional bias.
    fn conv3(&mut self, name: &str, input: usize, out: usize, bias: bool) {
        let scale = 1.0 / ((input * 9) as f32).sqrt();
        self.add(
            &format!("{name}.weight"),
            &[out, input, 3, 3],
            Fill::Noise(scale),
        );
        if bias {
            self.add(&format!("{name}.bias"), &[out], Fill::Noise(0.01));
        }
    }

    /// Writes a safetensors file, streaming the data (the Wan model is
    /// 2.8 GB; nothing that size is held in memory).
    fn write(&self, path: &Path, seed: u64) -> std::io::Result<()> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for t in &self.tensors {
            let n: usize = t.shape.iter().product();
            let len = n * if t.f16 { 2 } else { 4 };
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": if t.f16 { "F16" } else { "F32" }, "shape": t.shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        header.insert(
            "__metadata__".into(),
            serde_json::json!({"format": "pt", "generator": "studio-worker tiny_sd"}),
        );
        let mut head = serde_json::to_vec(&serde_json::Value::Object(header))?;
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        f.write_all(&(head.len() as u64).to_le_bytes())?;
        f.write_all(&head)?;
        let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
        for t in &self.tensors {
            let mut left: usize = t.shape.iter().product();
            while left > 0 {
                let n = left.min(1 << 18);
                chunk.clear();
                for _ in 0..n {
                    let v = match t.fill {
                        Fill::Noise(s) => next() * s,
                        Fill::Const(c) => c,
                    };
                    if t.f16 {
                        chunk.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    } else {
                        chunk.extend_from_slice(&v.to_le_bytes());
                    }
                }
                f.write_all(&chunk)?;
                left -= n;
            }
        }
        f.flush()
    }
}

const HIDDEN: usize = 256;
const HEAD_DIM: usize = 128;
const HEADS: usize = HIDDEN / HEAD_DIM;
const KV_HEADS: usize = 2;
const FFN: usize = 768; // 8/3 × 256 rounded up to a multiple of 256
const LATENT: usize = 16;
const PATCH: usize = 2;
const LLM_HIDDEN: usize = 64;
const LLM_FFN: usize = 128;
const VOCAB: usize = 151_936;
const TAE_CH: usize = 64;

fn dit() -> Writer {
    let mut w = Writer::new();
    let adaln = HIDDEN.min(256);
    w.linear("x_embedder", PATCH * PATCH * LATENT, HIDDEN, true);
    w.linear("t_embedder.mlp.0", 256, HIDDEN.min(1024), true);
    w.linear("t_embedder.mlp.2", HIDDEN.min(1024), 256, true);
    w.norm("cap_embedder.0", LLM_HIDDEN);
    w.linear("cap_embedder.1", LLM_HIDDEN, HIDDEN, true);
    w.add("cap_pad_token", &[HIDDEN], Fill::Noise(0.02));
    w.add("x_pad_token", &[HIDDEN], Fill::Noise(0.02));
    for (block, modulation) in [
        ("noise_refiner.0", true),
        ("context_refiner.0", false),
        ("layers.0", true),
    ] {
        w.linear(
            &format!("{block}.attention.qkv"),
            HIDDEN,
            (HEADS + 2 * KV_HEADS) * HEAD_DIM,
            false,
        );
        w.linear(
            &format!("{block}.attention.out"),
            HEADS * HEAD_DIM,
            HIDDEN,
            false,
        );
        w.norm(&format!("{block}.attention.q_norm"), HEAD_DIM);
        w.norm(&format!("{block}.attention.k_norm"), HEAD_DIM);
        w.linear(&format!("{block}.feed_forward.w1"), HIDDEN, FFN, false);
        w.linear(&format!("{block}.feed_forward.w2"), FFN, HIDDEN, false);
        w.linear(&format!("{block}.feed_forward.w3"), HIDDEN, FFN, false);
        for n in [
            "attention_norm1",
            "ffn_norm1",
            "attention_norm2",
            "ffn_norm2",
        ] {
            w.norm(&format!("{block}.{n}"), HIDDEN);
        }
        if modulation {
            w.linear(
                &format!("{block}.adaLN_modulation.0"),
                adaln,
                4 * HIDDEN,
                true,
            );
        }
    }
    w.linear("final_layer.linear", HIDDEN, PATCH * PATCH * LATENT, true);
    w.linear("final_layer.adaLN_modulation.1", adaln, HIDDEN, true);
    w
}

fn llm() -> Writer {
    let mut w = Writer::new();
    w.add(
        "model.embed_tokens.weight",
        &[VOCAB, LLM_HIDDEN],
        Fill::Noise(0.05),
    );
    let l = "model.layers.0";
    w.linear(
        &format!("{l}.self_attn.q_proj"),
        LLM_HIDDEN,
        32 * 128,
        false,
    );
    w.linear(&format!("{l}.self_attn.k_proj"), LLM_HIDDEN, 8 * 128, false);
    w.linear(&format!("{l}.self_attn.v_proj"), LLM_HIDDEN, 8 * 128, false);
    w.linear(
        &format!("{l}.self_attn.o_proj"),
        32 * 128,
        LLM_HIDDEN,
        false,
    );
    w.norm(&format!("{l}.self_attn.q_norm"), 128);
    w.norm(&format!("{l}.self_attn.k_norm"), 128);
    w.linear(&format!("{l}.mlp.gate_proj"), LLM_HIDDEN, LLM_FFN, false);
    w.linear(&format!("{l}.mlp.up_proj"), LLM_HIDDEN, LLM_FFN, false);
    w.linear(&format!("{l}.mlp.down_proj"), LLM_FFN, LLM_HIDDEN, false);
    w.norm(&format!("{l}.input_layernorm"), LLM_HIDDEN);
    w.norm(&format!("{l}.post_attention_layernorm"), LLM_HIDDEN);
    w.norm("model.norm", LLM_HIDDEN);
    w
}

fn tae_block(w: &mut Writer, name: &str) {
    for c in ["conv.0", "conv.2", "conv.4"] {
        w.conv3(&format!("{name}.{c}"), TAE_CH, TAE_CH, true);
    }
}

fn tae() -> Writer {
    let mut w = Writer::new();
    // Decoder: conv, ReLU, 3 blocks, up, conv, 3 blocks, up, conv, 3 blocks, up, conv, block, conv.
    let d = "decoder.layers";
    w.conv3(&format!("{d}.0"), LATENT, TAE_CH, true);
    for i in [2, 3, 4, 7, 8, 9, 12, 13, 14, 17] {
        tae_block(&mut w, &format!("{d}.{i}"));
    }
    for i in [6, 11, 16] {
        w.conv3(&format!("{d}.{i}"), TAE_CH, TAE_CH, false);
    }
    w.conv3(&format!("{d}.18"), TAE_CH, 3, true);
    // Encoder: conv, block, down, 3 blocks, down, 3 blocks, down, 3 blocks, conv.
    let e = "encoder.layers";
    w.conv3(&format!("{e}.0"), 3, TAE_CH, true);
    for i in [1, 3, 4, 5, 7, 8, 9, 11, 12, 13] {
        tae_block(&mut w, &format!("{e}.{i}"));
    }
    for i in [2, 6, 10] {
        w.conv3(&format!("{e}.{i}"), TAE_CH, TAE_CH, false);
    }
    w.conv3(&format!("{e}.14"), TAE_CH, LATENT, true);
    w
}

/// Writes the tiny model into `dir`; `seed` varies the weights (a second
/// seed gives a different model for swap tests).
pub fn write(dir: &Path, seed: u64) -> std::io::Result<TinyZImage> {
    std::fs::create_dir_all(dir)?;
    let m = TinyZImage {
        diffusion: dir.join(format!("tiny-z-image-{seed}.safetensors")),
        text_encoder: dir.join(format!("tiny-qwen3-{seed}.safetensors")),
        taesd: dir.join(format!("tiny-tae-{seed}.safetensors")),
    };
    dit().write(&m.diffusion, seed)?;
    llm().write(&m.text_encoder, seed + 1)?;
    tae().write(&m.taesd, seed + 2)?;
    Ok(m)
}

/// The two files of the Wan-shaped video model.
#[derive(Debug, Clone)]
pub struct TinyWan {
    /// `diffusion-model` role (Wan2.1 T2V 1.3B shape, 2.8 GB).
    pub diffusion: PathBuf,
    /// `taesd` role (TAEHV, the tiny video autoencoder for Wan).
    pub taesd: PathBuf,
}

// Wan2.1 T2V 1.3B: sd.cpp detects the family from the tensor names and the
// size from the layer count alone (30 layers → dim 1536, ffn 8960, 12
// heads), so a smaller Wan does not exist for it. See `wan.hpp`.
const WAN_LAYERS: usize = 30;
const WAN_DIM: usize = 1536;
const WAN_FFN: usize = 8960;
const WAN_TEXT_DIM: usize = 4096;
const WAN_FREQ_DIM: usize = 256;
const WAN_LATENT: usize = 16;

fn wan() -> Writer {
    let mut w = Writer::new();
    let d = WAN_DIM;
    // Conv3d(16 → dim, kernel = stride = (1, 2, 2)).
    w.add(
        "patch_embedding.weight",
        &[d, WAN_LATENT, 1, 2, 2],
        Fill::Noise(1.0 / ((WAN_LATENT * 4) as f32).sqrt()),
    );
    w.add("patch_embedding.bias", &[d], Fill::Noise(0.01));
    w.linear("text_embedding.0", WAN_TEXT_DIM, d, true);
    w.linear("text_embedding.2", d, d, true);
    w.linear("time_embedding.0", WAN_FREQ_DIM, d, true);
    w.linear("time_embedding.2", d, d, true);
    w.linear("time_projection.1", d, 6 * d, true);
    for i in 0..WAN_LAYERS {
        let b = format!("blocks.{i}");
        w.add_f32(&format!("{b}.modulation"), &[1, 6, d], Fill::Noise(0.02));
        for attn in ["self_attn", "cross_attn"] {
            for p in ["q", "k", "v", "o"] {
                w.linear(&format!("{b}.{attn}.{p}"), d, d, true);
            }
            w.norm(&format!("{b}.{attn}.norm_q"), d);
            w.norm(&format!("{b}.{attn}.norm_k"), d);
        }
        // cross_attn_norm: an affine LayerNorm before cross-attention.
        w.norm(&format!("{b}.norm3"), d);
        w.add(&format!("{b}.norm3.bias"), &[d], Fill::Const(0.0));
        w.linear(&format!("{b}.ffn.0"), d, WAN_FFN, true);
        w.linear(&format!("{b}.ffn.2"), WAN_FFN, d, true);
    }
    w.add_f32("head.modulation", &[1, 2, d], Fill::Noise(0.02));
    w.linear("head.head", d, WAN_LATENT * 4, true);
    w
}

/// TAEHV's memory block: conv over [x, previous frame], two more convs.
fn mem_block(w: &mut Writer, name: &str, ch: usize) {
    w.conv3(&format!("{name}.conv.0"), 2 * ch, ch, true);
    w.conv3(&format!("{name}.conv.2"), ch, ch, true);
    w.conv3(&format!("{name}.conv.4"), ch, ch, true);
}

/// TAEHV for Wan 2.1 (16 latent channels), layer indices as in `tae.hpp`.
fn taehv() -> Writer {
    let mut w = Writer::new();
    // Decoder: channels 256 → 128 → 64 → 64, time upscale (no, 2, 2).
    w.conv3("decoder.1", WAN_LATENT, 256, true);
    let mut i = 3;
    for (ch, next, t_stride) in [(256, 128, 1), (128, 64, 2), (64, 64, 2)] {
        for _ in 0..3 {
            mem_block(&mut w, &format!("decoder.{i}"), ch);
            i += 1;
        }
        i += 1; // nn.Upsample
        w.conv1(&format!("decoder.{i}.conv"), ch, ch * t_stride); // TGrow
        w.conv3(&format!("decoder.{}", i + 1), ch, next, false);
        i += 2;
    }
    w.conv3(&format!("decoder.{}", i + 1), 64, 3, true);
    // TAEHV's output is 0..1 and the noise above is centred on 0 (and
    // shrinks through the layers): start the pixels at mid-grey, not black.
    if let Some(bias) = w.tensors.last_mut() {
        bias.fill = Fill::Const(0.5);
    }
    // Encoder: hidden 64, time downscale (2, 2, no).
    w.conv3("encoder.0", 3, 64, true);
    let mut i = 2;
    for t_stride in [2, 2, 1] {
        w.conv1(&format!("encoder.{i}.conv"), 64 * t_stride, 64); // TPool
        w.conv3(&format!("encoder.{}", i + 1), 64, 64, false);
        i += 2;
        for _ in 0..3 {
            mem_block(&mut w, &format!("encoder.{i}"), 64);
            i += 1;
        }
    }
    w.conv3(&format!("encoder.{i}"), 64, WAN_LATENT, true);
    w
}

/// Writes the Wan-shaped random video model into `dir` (about 2.8 GB: the
/// opt-in heavy test's model).
pub fn write_wan(dir: &Path, seed: u64) -> std::io::Result<TinyWan> {
    std::fs::create_dir_all(dir)?;
    let m = TinyWan {
        diffusion: dir.join(format!("random-wan2.1-t2v-1.3b-{seed}.safetensors")),
        taesd: dir.join(format!("random-taew2.1-{seed}.safetensors")),
    };
    wan().write(&m.diffusion, seed)?;
    taehv().write(&m.taesd, seed + 1)?;
    Ok(m)
}
