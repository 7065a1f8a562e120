//! The content encoder: an item's text (title, body, keywords, category) as hashed word and
//! character n-gram features, plus an optional upstream image vector, through a small network to
//! an L2-normalised vector, trained with the cosine triplet hinge loss
//! `max(0, cos(a, n) + margin - cos(a, p))`.
//!
//! Network: one [`Tower`] — `u = Σ_t w_t E[:, h_t] + W_img x_img + b` (an embedding bag over
//! hashed features), `a = tanh(u)`, `v = W_out a`, `y = v / ‖v‖`. Gradients are written by hand
//! (checked against finite differences in the tests); AdaGrad updates only the embedding columns a
//! batch touched.

use crate::tower::{Grads, Input, Optimizer, Tower, Trace};
use crate::{Error, Result};
use nalgebra::DVector;

/// What the encoder's dense input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backbone {
    /// Hashed word and character n-grams only, plus an upstream image vector when items carry
    /// one (`image_dim`).
    #[default]
    Hashed,
    /// The sentence vector of a frozen pretrained text encoder (all-MiniLM-L6-v2) of the item's
    /// text; the network above it is the trainable projection head. `image_dim` is its dimension.
    MiniLm,
}

impl Backbone {
    /// The name in configs, flags and model files.
    pub fn as_str(self) -> &'static str {
        match self {
            Backbone::Hashed => "hashed",
            Backbone::MiniLm => "minilm",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Backbone> {
        match s {
            "hashed" => Some(Backbone::Hashed),
            "minilm" => Some(Backbone::MiniLm),
            _ => None,
        }
    }
}

impl std::str::FromStr for Backbone {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Backbone::parse(s).ok_or_else(|| format!("{s:?} is not one of hashed, minilm"))
    }
}

/// A pretrained sentence encoder that serves as a frozen backbone.
pub trait SentenceEncoder: Send + Sync {
    /// Its vectors' dimension.
    fn dim(&self) -> usize;
    /// The L2-normalised sentence vector of each text.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// Loads the MiniLM backbone from a folder (`config.json`, `tokenizer.json`,
/// `model.safetensors`); an error when this build lacks the cargo feature `minilm`.
pub fn load_minilm(dir: &std::path::Path) -> Result<std::sync::Arc<dyn SentenceEncoder>> {
    #[cfg(feature = "minilm")]
    {
        Ok(std::sync::Arc::new(crate::minilm::MiniLm::load(dir)?))
    }
    #[cfg(not(feature = "minilm"))]
    {
        Err(Error::Backbone(format!(
            "{}: this build has no MiniLM backbone (build with the cargo feature `minilm`)",
            dir.display()
        )))
    }
}

/// Shape and training constants of the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Hash buckets of the feature space.
    pub buckets: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Output dimension.
    pub dim: usize,
    /// Length of `image_vec` (0: items carry none).
    pub image_dim: usize,
    /// Triplet margin.
    pub margin: f32,
    /// AdaGrad learning rate.
    pub learning_rate: f32,
    /// Initialisation seed.
    pub seed: u64,
    /// What the dense input holds.
    pub backbone: Backbone,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            hidden: 128,
            dim: 64,
            image_dim: 0,
            margin: 0.3,
            learning_rate: 0.05,
            seed: 1,
            backbone: Backbone::Hashed,
        }
    }
}

/// The text of an item, as the encoder sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemText<'a> {
    /// Title.
    pub title: &'a str,
    /// Body.
    pub body: &'a str,
    /// Category.
    pub category: &'a str,
    /// Keywords.
    pub keywords: &'a [String],
    /// Upstream image vector, if any.
    pub image: Option<&'a [f32]>,
}

/// Sparse features of one item: (bucket, weight) pairs, plus the image vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Hashed features, one entry per bucket, each field's tokens weighted `1/√n`.
    pub sparse: Vec<(u32, f32)>,
    /// Image vector (empty when absent).
    pub image: Vec<f32>,
    /// Each field's token buckets (with repeats), so that encoding can weigh a field over the
    /// tokens the model knows; empty when the features were built by hand.
    pub fields: Vec<Vec<u32>>,
}

fn fnv(tag: u8, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ tag as u64;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Hashes an item's text into `buckets` features. Each field's tokens share a total weight of one
/// (by `1/√n`), so a long body does not drown the category: category and keywords as whole
/// tokens, words and word bigrams of title and body, character trigrams of title words (robust to
/// spelling and inflection).
pub fn features(item: &ItemText<'_>, buckets: usize) -> Features {
    let mut acc: std::collections::HashMap<u32, f32> = std::collections::HashMap::new();
    let mut fields: Vec<Vec<u32>> = Vec::new();
    let mut field = |tag: u8, tokens: Vec<String>| {
        if tokens.is_empty() {
            return;
        }
        let w = 1.0 / (tokens.len() as f32).sqrt();
        let mut ids = Vec::with_capacity(tokens.len());
        for t in tokens {
            let b = (fnv(tag, &t) % buckets as u64) as u32;
            *acc.entry(b).or_insert(0.0) += w;
            ids.push(b);
        }
        fields.push(ids);
    };
    field(
        b'c',
        vec![item.category.trim().to_lowercase()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
    );
    field(
        b'k',
        item.keywords
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect(),
    );
    for (tag, text) in [(b't', item.title), (b'b', item.body)] {
        let ws = words(text);
        let mut toks: Vec<String> = ws.clone();
        toks.extend(ws.windows(2).map(|p| format!("{} {}", p[0], p[1])));
        field(tag, toks);
    }
    let mut grams = Vec::new();
    for w in words(item.title) {
        let chars: Vec<char> = format!("#{w}#").chars().collect();
        grams.extend(chars.windows(3).map(|g| g.iter().collect::<String>()));
    }
    field(b'3', grams);
    let mut sparse: Vec<(u32, f32)> = acc.into_iter().collect();
    sparse.sort_unstable_by_key(|x| x.0);
    Features {
        sparse,
        image: item.image.map(|v| v.to_vec()).unwrap_or_default(),
        fields,
    }
}

/// The trainable parameters: one [`Tower`] whose dense input is the image (or backbone) vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder {
    /// Configuration.
    pub cfg: EncoderConfig,
    /// The network (`net.w_dense` is the image projection, `hidden × image_dim`).
    pub net: Tower,
}

impl Features {
    fn input(&self) -> Input<'_> {
        Input {
            sparse: &self.sparse,
            dense: &self.image,
            extra: None,
        }
    }
}

impl Encoder {
    /// A freshly initialised encoder (small uniform weights, scaled by fan-in).
    pub fn new(cfg: EncoderConfig) -> Result<Self> {
        let net = Tower::new(cfg.buckets, cfg.hidden, cfg.dim, cfg.image_dim, cfg.seed)?;
        Ok(Self { cfg, net })
    }

    /// The optimiser state for this encoder.
    pub fn optimizer(&self) -> Optimizer {
        self.net.optimizer()
    }

    fn forward(&self, f: &Features) -> Result<Trace> {
        self.net.forward(&f.input())
    }

    /// The L2-normalised content vector of an item. Tokens whose rows training never touched
    /// are left out and each field is weighed over the tokens that remain, so a token never seen
    /// in training (a new tag, an id in a title) changes nothing: an item and its twin with one
    /// unseen keyword more get the same vector.
    pub fn encode(&self, f: &Features) -> Result<DVector<f32>> {
        if f.fields.is_empty() {
            return Ok(self.forward(f)?.y);
        }
        if let Some(&b) = f
            .fields
            .iter()
            .flatten()
            .find(|&&b| b as usize >= self.cfg.buckets)
        {
            return Err(Error::DimensionMismatch {
                left: b as usize,
                right: self.cfg.buckets,
            });
        }
        let mut acc: std::collections::HashMap<u32, f32> = std::collections::HashMap::new();
        for field in &f.fields {
            let known: Vec<u32> = field
                .iter()
                .copied()
                .filter(|&b| self.net.knows(b))
                .collect();
            if known.is_empty() {
                continue;
            }
            let w = 1.0 / (known.len() as f32).sqrt();
            for b in known {
                *acc.entry(b).or_insert(0.0) += w;
            }
        }
        let mut sparse: Vec<(u32, f32)> = acc.into_iter().collect();
        sparse.sort_unstable_by_key(|x| x.0);
        let known = Features {
            sparse,
            image: f.image.clone(),
            fields: Vec::new(),
        };
        Ok(self.forward(&known)?.y)
    }

    /// Zeroes the embedding rows that training never updated: an untrained row is random noise,
    /// and encoding leaves zero rows out.
    pub fn forget_untrained(&mut self, opt: &Optimizer) {
        self.net.forget_untrained(opt);
    }

    fn zero_grads(&self) -> Grads {
        self.net.zero_grads()
    }

    /// Hinge loss of one triplet and, when `grads` is given, its gradients added in.
    fn triplet(
        &self,
        a: &Features,
        p: &Features,
        n: &Features,
        grads: Option<&mut Grads>,
    ) -> Result<f32> {
        let (ta, tp, tn) = (self.forward(a)?, self.forward(p)?, self.forward(n)?);
        let loss = ta.y.dot(&tn.y) + self.cfg.margin - ta.y.dot(&tp.y);
        if loss <= 0.0 {
            return Ok(0.0);
        }
        if let Some(g) = grads {
            self.net.backward(&a.input(), &ta, &(&tn.y - &tp.y), g);
            self.net.backward(&p.input(), &tp, &(-&ta.y), g);
            self.net.backward(&n.input(), &tn, &ta.y, g);
        }
        Ok(loss)
    }

    /// Mean hinge loss of triplets, without training.
    pub fn loss(&self, triplets: &[(&Features, &Features, &Features)]) -> Result<f32> {
        let mut total = 0.0;
        for (a, p, n) in triplets {
            total += self.triplet(a, p, n, None)?;
        }
        Ok(total / triplets.len().max(1) as f32)
    }

    /// One AdaGrad step on a batch of triplets; returns the batch's mean loss before the step.
    pub fn step(
        &mut self,
        opt: &mut Optimizer,
        batch: &[(&Features, &Features, &Features)],
    ) -> Result<f32> {
        let mut g = self.zero_grads();
        let mut total = 0.0;
        for (a, p, n) in batch {
            total += self.triplet(a, p, n, Some(&mut g))?;
        }
        let scale = 1.0 / batch.len().max(1) as f32;
        self.net.apply(opt, &g, scale, self.cfg.learning_rate);
        Ok(total * scale)
    }

    /// Share of triplets the encoder orders right: `cos(a, p) > cos(a, n)`.
    pub fn triplet_accuracy(&self, triplets: &[(&Features, &Features, &Features)]) -> Result<f32> {
        let mut right = 0usize;
        for (a, p, n) in triplets {
            let (ya, yp, yn) = (self.encode(a)?, self.encode(p)?, self.encode(n)?);
            if ya.dot(&yp) > ya.dot(&yn) {
                right += 1;
            }
        }
        Ok(right as f32 / triplets.len().max(1) as f32)
    }
}

#[cfg(test)]
mod tests;
