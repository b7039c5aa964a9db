//! Server-side tokenization: a text model takes a `BYTES` tensor of UTF-8
//! strings, and the engine feeds the graph token ids and masks.

use tokenizers::Tokenizer;
use tract_onnx::prelude::*;

use crate::datatype::DataType;
use crate::error::{Error, Result};
use crate::model::{Dim, Limits, TensorSpec};
use crate::tensor::{InputTensor, check_shape, decode_strings};

/// The public input name of every text model.
pub const TEXT_INPUT: &str = "text";

/// Token ids beyond this many are cut (BERT's position table) unless the
/// tokenizer sets its own truncation.
const DEFAULT_MAX_TOKENS: usize = 512;

/// Which graph input receives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Ids,
    Mask,
    TypeIds,
}

pub(crate) struct TextFrontEnd {
    tokenizer: Tokenizer,
    /// One entry per graph input, in graph order.
    feeds: Vec<Feed>,
    pad_id: i64,
    spec: TensorSpec,
}

impl TextFrontEnd {
    pub(crate) fn new(json: &[u8], graph_inputs: &[TensorSpec]) -> Result<Self> {
        let mut tokenizer =
            Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let pad_id = tokenizer.get_padding().map_or(0, |p| i64::from(p.pad_id));
        // We pad ourselves, to the longest string of each request.
        tokenizer.with_padding(None);
        if tokenizer.get_truncation().is_none() {
            tokenizer
                .with_truncation(Some(tokenizers::TruncationParams {
                    max_length: DEFAULT_MAX_TOKENS,
                    ..Default::default()
                }))
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
        }
        let feeds = graph_inputs
            .iter()
            .map(|spec| {
                let feed = match spec.name.as_str() {
                    "input_ids" => Feed::Ids,
                    "attention_mask" => Feed::Mask,
                    "token_type_ids" => Feed::TypeIds,
                    other => {
                        return Err(Error::InvalidModel(format!(
                            "a model with a tokenizer takes input_ids, attention_mask and \
                             token_type_ids; it has `{}`",
                            crate::tensor::clip(other)
                        )));
                    }
                };
                if spec.datatype != DataType::I64 || spec.shape.len() != 2 {
                    return Err(Error::InvalidModel(format!(
                        "text model input `{}` must be INT64 [batch, sequence]",
                        spec.name
                    )));
                }
                Ok(feed)
            })
            .collect::<Result<Vec<_>>>()?;
        if !feeds.contains(&Feed::Ids) {
            return Err(Error::InvalidModel(
                "a model with a tokenizer needs an `input_ids` input".into(),
            ));
        }
        Ok(TextFrontEnd {
            tokenizer,
            feeds,
            pad_id,
            spec: TensorSpec {
                name: TEXT_INPUT.into(),
                datatype: DataType::Bytes,
                shape: vec![Dim::Dynamic("batch".into())],
            },
        })
    }

    pub(crate) fn spec(&self) -> TensorSpec {
        self.spec.clone()
    }

    /// Checks and tokenizes the text input; returns the graph's inputs.
    pub(crate) fn encode(&self, input: &InputTensor<'_>, limits: &Limits) -> Result<TVec<TValue>> {
        let text_limits = Limits {
            max_input_elements: limits.max_text_items,
            ..*limits
        };
        let count = check_shape(&self.spec, input, &text_limits, &mut Default::default())?;
        let strings = decode_strings(TEXT_INPUT, input.data, count)?;
        let encodings = strings
            .into_iter()
            .map(|s| self.tokenizer.encode(s, true))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let rows = encodings.len();
        let width = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);

        self.feeds
            .iter()
            .map(|feed| {
                let mut tensor =
                    Tensor::zero::<i64>(&[rows, width]).map_err(crate::error::execution)?;
                self.fill(&mut tensor, *feed, &encodings, width)?;
                Ok(tensor.into_tvalue())
            })
            .collect()
    }

    /// Writes one feed (ids padded with the pad id, mask, or type ids) of
    /// every encoding into a zeroed [rows, width] tensor.
    fn fill(
        &self,
        tensor: &mut Tensor,
        feed: Feed,
        encodings: &[tokenizers::Encoding],
        width: usize,
    ) -> Result<()> {
        let mut view = tensor
            .try_as_plain_ram_mut()
            .map_err(crate::error::execution)?;
        let cells = view
            .as_slice_mut::<i64>()
            .map_err(crate::error::execution)?;
        for (line, encoding) in cells.chunks_mut(width).zip(encodings) {
            let source = match feed {
                Feed::Ids => {
                    line.fill(self.pad_id);
                    encoding.get_ids()
                }
                Feed::Mask => encoding.get_attention_mask(),
                Feed::TypeIds => encoding.get_type_ids(),
            };
            for (cell, value) in line.iter_mut().zip(source) {
                *cell = i64::from(*value);
            }
        }
        Ok(())
    }
}
