//! Text for language models (`dataset = "text"`): reading, the vocabulary, and the windows.
//!
//! - **Reading**: `data.path` is a UTF-8 file, or a directory whose regular files without a '.'
//!   in their names are concatenated in byte order of their names (the `fortunes` package keeps
//!   each text beside a `.dat` index and a `.u8` link). The manifest records one SHA-256 of the
//!   text as read (`<name>` → hash of the concatenated bytes).
//! - **Vocabulary**: `tokenizer = "char"`: the distinct code points of the whole text in
//!   ascending order (nanoGPT's `sorted(set(text))`); `"byte"`: the 256 byte values. The vocabulary
//!   is saved in the checkpoint (`lockstep.inference` class names), so sampling needs no text.
//! - **Split by position**: the first `floor(0.9 * n)` tokens train, the rest validate (nanoGPT).
//! - **Training windows**: step `s` takes `batch_size` windows of `block_size + 1` tokens; window
//!   `i` starts at draw `i` of stream `batch/step-<s>` (`below(n_train - block_size)`), input its
//!   first `block_size` tokens, targets the last `block_size` (nanoGPT's `get_batch`). The data
//!   order is therefore a pure function of seed and step: nothing to save for resume.
//! - **Validation windows**: `eval_windows` windows from stream `eval/validation-windows`, drawn
//!   the same way over the validation tokens: the same windows at every evaluation.

use crate::TrainError;
use crate::data::Split;
use lockstep_core::config::{TextConfig, Tokenizer};
use lockstep_core::{SeedStream, sha256_hex};
use std::path::Path;

/// Token ids to strings and back.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokenizer: Tokenizer,
    /// `Char`: the code points, ascending (token id = index). Empty for `Byte`.
    pub chars: Vec<char>,
}

impl Vocab {
    /// The vocabulary of `text` (module doc).
    pub fn build(text: &str, tokenizer: Tokenizer) -> Self {
        let chars = match tokenizer {
            Tokenizer::Byte => vec![],
            Tokenizer::Char => {
                let mut c: Vec<char> = text.chars().collect();
                c.sort_unstable();
                c.dedup();
                c
            }
        };
        Vocab { tokenizer, chars }
    }

    /// From a checkpoint's class names (one string per token; none for bytes).
    pub fn from_names(tokenizer: Tokenizer, names: &[String]) -> Result<Self, String> {
        let mut chars = Vec::with_capacity(names.len());
        for n in names {
            let mut it = n.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => return Err(format!("vocabulary entry {n:?} is not one character")),
            }
        }
        if tokenizer == Tokenizer::Char && (chars.is_empty() || !chars.is_sorted()) {
            return Err("the character vocabulary must be non-empty and ascending".into());
        }
        Ok(Vocab { tokenizer, chars })
    }

    pub fn size(&self) -> usize {
        match self.tokenizer {
            Tokenizer::Byte => 256,
            Tokenizer::Char => self.chars.len(),
        }
    }

    /// One string per token id, for the checkpoint (empty for bytes).
    pub fn names(&self) -> Vec<String> {
        self.chars.iter().map(|c| c.to_string()).collect()
    }

    /// The tokens of `s`, or the first character outside the vocabulary.
    pub fn encode(&self, s: &str) -> Result<Vec<u32>, char> {
        match self.tokenizer {
            Tokenizer::Byte => Ok(s.bytes().map(u32::from).collect()),
            Tokenizer::Char => s
                .chars()
                .map(|c| {
                    self.chars
                        .binary_search(&c)
                        .map(|i| i as u32)
                        .map_err(|_| c)
                })
                .collect(),
        }
    }

    /// The text of `ids` (bytes that are not valid UTF-8 become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self.tokenizer {
            Tokenizer::Byte => {
                String::from_utf8_lossy(&ids.iter().map(|&t| t as u8).collect::<Vec<u8>>())
                    .into_owned()
            }
            Tokenizer::Char => ids.iter().map(|&t| self.chars[t as usize]).collect(),
        }
    }
}

/// A tokenised text, split by position.
#[derive(Clone, Debug)]
pub struct TextData {
    pub vocab: Vocab,
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
    pub block: usize,
    /// The name the manifest records the text's hash under.
    pub name: String,
    pub sha256: String,
}

/// The text `cfg.path` names (module doc), refusing what cannot be trained on.
pub fn read_text(cfg: &TextConfig) -> Result<(String, String), TrainError> {
    let path = Path::new(&cfg.path);
    let bad = |what: String, fix: &str| TrainError::data(path, what, fix);
    let bytes = if path.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| bad(format!("cannot list the directory: {e}"), "check the path"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().contains('.'))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(bad(
                "holds no regular files without a '.' in their names".into(),
                "point data.path at a UTF-8 text file, or at a directory of them",
            ));
        }
        let mut all = Vec::new();
        for n in names {
            let p = path.join(&n);
            all.extend(std::fs::read(&p).map_err(|e| {
                TrainError::data(&p, format!("cannot read: {e}"), "check permissions")
            })?);
        }
        all
    } else {
        std::fs::read(path).map_err(|e| {
            bad(
                format!("cannot read the text: {e}"),
                "set data.path to an existing UTF-8 file (the shipped config reads the `fortunes` package: bash scripts/setup.sh installs it)",
            )
        })?
    };
    let sha = sha256_hex(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(
            format!(
                "is not UTF-8 (invalid bytes at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "convert the text to UTF-8 (e.g. iconv -t UTF-8)",
        )
    })?;
    if text.is_empty() {
        return Err(bad(
            "is empty".into(),
            "point data.path at a text with content",
        ));
    }
    Ok((text, sha))
}

impl TextData {
    pub fn load(cfg: &TextConfig) -> Result<Self, TrainError> {
        let (text, sha256) = read_text(cfg)?;
        let vocab = Vocab::build(&text, cfg.tokenizer);
        let tokens = vocab
            .encode(&text)
            .expect("the vocabulary covers its own text");
        let n = tokens.len();
        let cut = n * 9 / 10;
        let path = Path::new(&cfg.path);
        let need = cfg.block_size + 1;
        if cut < need || n - cut < need {
            return Err(TrainError::data(
                path,
                format!(
                    "has {n} tokens: its training part ({cut}) and validation part ({}) must each hold a window of block_size + 1 = {need} tokens",
                    n - cut
                ),
                format!(
                    "use a text of at least {} tokens, or a smaller model.block_size",
                    need * 10 + 10
                ),
            ));
        }
        let name = path
            .file_name()
            .map_or_else(|| cfg.path.clone(), |s| s.to_string_lossy().into_owned());
        Ok(TextData {
            vocab,
            validation: tokens[cut..].to_vec(),
            train: tokens[..cut].to_vec(),
            block: cfg.block_size,
            name,
            sha256,
        })
    }

    /// `count` windows drawn from `stream` over `tokens`: inputs `[count, block]` (token ids as
    /// f32) and targets `[count * block]`.
    fn windows(
        &self,
        tokens: &[u32],
        stream: &mut SeedStream,
        count: usize,
    ) -> (Vec<f32>, Vec<u32>) {
        let t = self.block;
        let starts = (tokens.len() - t) as u32;
        let mut x = Vec::with_capacity(count * t);
        let mut y = Vec::with_capacity(count * t);
        for _ in 0..count {
            let o = stream.below(starts) as usize;
            x.extend(tokens[o..o + t].iter().map(|&v| v as f32));
            y.extend_from_slice(&tokens[o + 1..o + t + 1]);
        }
        (x, y)
    }

    /// Step `step`'s training batch (module doc).
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize) -> (Vec<f32>, Vec<u32>) {
        let mut s = SeedStream::new(seed, lockstep_core::streams::batch(step));
        self.windows(&self.train, &mut s, batch)
    }

    /// The validation windows every evaluation scores, as a split (`dim` = block size, `block`
    /// labels per window).
    pub fn eval_split(&self, seed: u64, count: usize) -> Split {
        let mut s = SeedStream::new(seed, lockstep_core::streams::EVAL_WINDOWS);
        let (features, labels) = self.windows(&self.validation, &mut s, count);
        Split {
            features,
            labels,
            dim: self.block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_vocabulary_is_sorted_code_points_and_round_trips() {
        let v = Vocab::build("hello, wörld", Tokenizer::Char);
        assert_eq!(
            v.chars,
            vec![' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w', 'ö']
        );
        let ids = v.encode("world").expect("in the vocabulary");
        assert_eq!(ids, vec![8, 6, 7, 5, 2]);
        assert_eq!(v.decode(&ids), "world");
        assert_eq!(v.encode("x"), Err('x'));
        let b = Vocab::build("ö", Tokenizer::Byte);
        assert_eq!(b.encode("ö").expect("bytes"), vec![0xc3, 0xb6]);
        assert_eq!(b.size(), 256);
        assert_eq!(
            Vocab::from_names(Tokenizer::Char, &v.names()).expect("valid"),
            v
        );
    }
}
