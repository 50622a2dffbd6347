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

    fn add(&mut self, name: &str, shape: &[usize], fill: Fill) {
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            fill,
        });
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

    /// Writes a safetensors file: 2-D+ tensors as F16, 1-D as F32.
    fn write(&self, path: &Path, seed: u64) -> std::io::Result<()> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut header = serde_json::Map::new();
        let mut data: Vec<u8> = Vec::new();
        for t in &self.tensors {
            let n: usize = t.shape.iter().product();
            let f16 = t.shape.len() > 1;
            let start = data.len();
            for _ in 0..n {
                let v = match t.fill {
                    Fill::Noise(s) => next() * s,
                    Fill::Const(c) => c,
                };
                if f16 {
                    data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
                } else {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": if f16 { "F16" } else { "F32" }, "shape": t.shape, "data_offsets": [start, data.len()]}),
            );
        }
        header.insert(
            "__metadata__".into(),
            serde_json::json!({"format": "pt", "generator": "studio-worker tiny_sd"}),
        );
        let mut head = serde_json::to_vec(&serde_json::Value::Object(header))?;
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        f.write_all(&(head.len() as u64).to_le_bytes())?;
        f.write_all(&head)?;
        f.write_all(&data)?;
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
