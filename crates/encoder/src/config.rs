//! The `[encoder]` section of the configuration.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The content encoder's pretrained backbone, for models trained on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderSettings {
    /// Folder of the all-MiniLM-L6-v2 files (`config.json`, `tokenizer.json`,
    /// `model.safetensors`); needed by encoders and training jobs for models with the `minilm`
    /// backbone (a build with the cargo feature `minilm`).
    pub minilm_dir: Option<PathBuf>,
}
