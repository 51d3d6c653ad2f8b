//! A small, strict reader and an atomic writer for the safetensors format.
//!
//! Kiln parses the format itself (an 8-byte little-endian header length, a JSON header,
//! then raw little-endian tensor bytes) so that every way a download can go wrong — a
//! truncated file, a Git LFS pointer, an HTML error page, a pickle — gets its own error.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};

use crate::error::{Error, Result};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean (one byte each).
    Bool,
    /// Any other type (stored as its safetensors name).
    Other(&'static str),
}

impl Dtype {
    fn parse(s: &str) -> Dtype {
        match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            "I8" => Dtype::Other("I8"),
            "I16" => Dtype::Other("I16"),
            "U16" => Dtype::Other("U16"),
            "U32" => Dtype::Other("U32"),
            "U64" => Dtype::Other("U64"),
            "F8_E4M3" => Dtype::Other("F8_E4M3"),
            "F8_E5M2" => Dtype::Other("F8_E5M2"),
            _ => Dtype::Other("unknown"),
        }
    }

    /// Bytes per element, when known.
    pub fn size(self) -> Option<usize> {
        match self {
            Dtype::F64 | Dtype::I64 => Some(8),
            Dtype::F32 | Dtype::I32 => Some(4),
            Dtype::F16 | Dtype::BF16 => Some(2),
            Dtype::U8 | Dtype::Bool => Some(1),
            Dtype::Other("I8") | Dtype::Other("F8_E4M3") | Dtype::Other("F8_E5M2") => Some(1),
            Dtype::Other("I16") | Dtype::Other("U16") => Some(2),
            Dtype::Other("U32") => Some(4),
            Dtype::Other("U64") => Some(8),
            Dtype::Other(_) => None,
        }
    }

    /// The name safetensors uses for this type.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
            Dtype::Other(s) => s,
        }
    }

    /// Whether this is a floating-point type Kiln can load as weights.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A validated safetensors file: read fully into memory ([`SafeTensors::open`], for small
/// files such as adapters) or only its header, with each tensor read from the file when it is
/// asked for ([`SafeTensors::open_lazy`], for checkpoints: loading then holds one tensor's bytes
/// at a time, never the whole file beside the model built from it).
#[derive(Debug)]
pub struct SafeTensors {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The open file a lazily read file's tensors come from.
    file: Option<Mutex<std::fs::File>>,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

/// Recognises files that are clearly not safetensors, so the error can say what they are.
pub fn sniff_foreign(path: &Path, head: &[u8], file_len: u64) -> Option<Error> {
    let text_start = head
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(200)
        .copied()
        .collect::<Vec<u8>>();
    let lower = String::from_utf8_lossy(&text_start).to_ascii_lowercase();
    if lower.starts_with("version https://git-lfs") {
        return Some(Error::GitLfsPointer {
            path: path.to_owned(),
            size: file_len,
        });
    }
    if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || lower.starts_with("<head")
    {
        return Some(Error::HtmlPage {
            path: path.to_owned(),
        });
    }
    // A PyTorch zip archive (`PK\x03\x04`) or a raw pickle (protocol marker 0x80). A
    // safetensors file whose header length is 0x0580 also starts `80 05`: its JSON header
    // then opens at byte 8, which a pickle's opcodes never put there.
    let safetensors_header = head.get(8) == Some(&b'{');
    if head.starts_with(b"PK\x03\x04")
        || (head.first() == Some(&0x80)
            && head.get(1).is_some_and(|v| *v <= 5)
            && !safetensors_header)
    {
        return Some(Error::PickleCheckpoint {
            path: path.to_owned(),
        });
    }
    None
}

impl SafeTensors {
    /// Reads and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Reads and validates the header of `path` (cheap even for multi-GB files); tensors are
    /// read from the file when asked for ([`SafeTensors::f32`], [`SafeTensors::tensor_data`]).
    pub fn open_lazy(path: &Path) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = vec![0u8; len.min(1 << 16) as usize];
        f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        let header_len = Self::header_len(path, &head, len)?;
        let mut bytes = vec![0u8; 8 + header_len];
        bytes[..head.len().min(8 + header_len)]
            .copy_from_slice(&head[..head.len().min(8 + header_len)]);
        if head.len() < 8 + header_len {
            f.read_exact(&mut bytes[head.len()..])
                .map_err(|e| Error::io(path, e))?;
        }
        let (tensors, metadata) = Self::parse_header(
            path,
            &bytes[8..],
            (len as usize).saturating_sub(8 + header_len),
        )?;
        Ok(SafeTensors {
            path: path.to_owned(),
            bytes,
            file: Some(Mutex::new(f)),
            data_start: 8 + header_len,
            tensors,
            metadata,
        })
    }

    fn header_len(path: &Path, head: &[u8], file_len: u64) -> Result<usize> {
        if let Some(err) = sniff_foreign(path, head, file_len) {
            return Err(err);
        }
        if head.len() < 8 {
            return Err(Error::format(
                path,
                format!("not a safetensors file: only {file_len} bytes long"),
            ));
        }
        let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        if n == 0 || n > 100 * 1024 * 1024 {
            return Err(Error::format(
                path,
                "not a safetensors file (no valid header)",
            ));
        }
        if 8 + n > file_len {
            return Err(Error::format(
                path,
                format!(
                    "truncated or not a safetensors file: header claims {n} bytes but the file has {file_len}"
                ),
            ));
        }
        if head.len() > 8 && head[8] != b'{' {
            return Err(Error::format(
                path,
                "not a safetensors file (header is not JSON)",
            ));
        }
        Ok(n as usize)
    }

    /// Validates an in-memory file; `path` is used in error messages only.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let header_len =
            Self::header_len(path, &bytes[..bytes.len().min(1 << 12)], bytes.len() as u64)?;
        let data_len = bytes.len() - 8 - header_len;
        let (tensors, metadata) = Self::parse_header(path, &bytes[8..8 + header_len], data_len)?;
        Ok(SafeTensors {
            path: path.to_owned(),
            bytes,
            file: None,
            data_start: 8 + header_len,
            tensors,
            metadata,
        })
    }

    fn parse_header(
        path: &Path,
        header: &[u8],
        data_len: usize,
    ) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
        let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| {
            Error::format(
                path,
                format!("not a safetensors file (header is not valid JSON: {e})"),
            )
        })?;
        let obj = value.as_object().ok_or_else(|| {
            Error::format(path, "not a safetensors file (header is not a JSON object)")
        })?;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, entry) in obj {
            if name == "__metadata__" {
                if let Some(m) = entry.as_object() {
                    for (k, v) in m {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        metadata.insert(k.clone(), v);
                    }
                }
                continue;
            }
            let bad = |what: &str| {
                Error::format(
                    path,
                    format!("corrupt safetensors header: tensor '{name}' {what}"),
                )
            };
            let dtype = entry
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad("has no dtype"))?;
            let dtype = Dtype::parse(dtype);
            let shape: Vec<usize> = entry
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("has no shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("has an invalid shape"))?;
            let offsets: Vec<usize> = entry
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("has no data_offsets"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("has invalid data_offsets"))?;
            let [start, end] = offsets[..] else {
                return Err(bad("has invalid data_offsets"));
            };
            if start > end {
                return Err(bad("has invalid data_offsets"));
            }
            if end > data_len {
                return Err(Error::format(
                    path,
                    format!(
                        "truncated: tensor '{name}' needs bytes up to {end} but only {data_len} bytes of data are present \
                         (the download was probably interrupted)"
                    ),
                ));
            }
            // Checked: a crafted shape's product can overflow (and then wrap to a length
            // that matches).
            let numel = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| bad("has a shape whose size overflows"))?;
            if let Some(size) = dtype.size()
                && numel.checked_mul(size) != Some(end - start)
            {
                return Err(bad("has a byte length that does not match its shape"));
            }
            tensors.insert(
                name.clone(),
                TensorInfo {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok((tensors, metadata))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The tensor data after the header (empty for a lazily read file).
    pub fn data(&self) -> &[u8] {
        self.bytes.get(self.data_start..).unwrap_or(&[])
    }

    /// The `__metadata__` string map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Information about one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The most common floating-point dtype among the tensors (what `kiln inspect` reports).
    pub fn main_dtype(&self) -> Option<Dtype> {
        let mut counts: BTreeMap<&'static str, (usize, Dtype)> = BTreeMap::new();
        for t in self.tensors.values().filter(|t| t.dtype.is_float()) {
            counts.entry(t.dtype.name()).or_insert((0, t.dtype)).0 += t.numel();
        }
        counts.values().max_by_key(|(n, _)| *n).map(|(_, d)| *d)
    }

    /// Calls `f` with the stored bytes of tensor `name` (from memory, or read from the file
    /// for a lazily opened one).
    fn with_raw<R>(
        &self,
        name: &str,
        f: impl FnOnce(&TensorInfo, &[u8]) -> Result<R>,
    ) -> Result<R> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor named '{name}'")))?;
        if let Some(file) = &self.file {
            let mut raw = vec![0u8; info.end - info.start];
            let io = |e| Error::io(&self.path, e);
            {
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                file.seek(SeekFrom::Start((self.data_start + info.start) as u64))
                    .map_err(io)?;
                file.read_exact(&mut raw).map_err(io)?;
            }
            return f(info, &raw);
        }
        match self
            .bytes
            .get(self.data_start + info.start..self.data_start + info.end)
        {
            Some(raw) => f(info, raw),
            None => Err(Error::format(&self.path, "the file ends inside a tensor")),
        }
    }

    /// Reads a tensor as f32 (converting f16/bf16/f64/integers).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        self.with_raw(name, |info, raw| self.decode_f32(name, info, raw))
    }

    /// Reads a float tensor as `dtype` (F32, F16 or BF16) without an f32 copy on the way when
    /// the stored type is the one asked for: what loading a half-precision model straight to
    /// half precision needs (its shape is the stored one).
    pub fn tensor_data(&self, name: &str, dtype: DType) -> Result<TensorData> {
        self.with_raw(name, |info, raw| {
            let shape = info.shape.clone();
            Ok(match (dtype, info.dtype) {
                (DType::F16, Dtype::F16) => TensorData::new(
                    raw.chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<f16>>(),
                    shape,
                ),
                (DType::BF16, Dtype::BF16) => TensorData::new(
                    raw.chunks_exact(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<bf16>>(),
                    shape,
                ),
                (DType::F16, _) => TensorData::new(
                    self.decode_f32(name, info, raw)?
                        .into_iter()
                        .map(f16::from_f32)
                        .collect::<Vec<f16>>(),
                    shape,
                ),
                (DType::BF16, _) => TensorData::new(
                    self.decode_f32(name, info, raw)?
                        .into_iter()
                        .map(bf16::from_f32)
                        .collect::<Vec<bf16>>(),
                    shape,
                ),
                _ => TensorData::new(self.decode_f32(name, info, raw)?, shape),
            })
        })
    }

    fn decode_f32(&self, name: &str, info: &TensorInfo, raw: &[u8]) -> Result<Vec<f32>> {
        let out = match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            Dtype::U8 | Dtype::Bool => raw.iter().map(|&b| b as f32).collect(),
            Dtype::Other(name_) => {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{name}' has dtype {name_}, which Kiln cannot read"),
                ));
            }
        };
        Ok(out)
    }
}

/// One tensor to write: name, shape, f32 values.
pub struct WriteTensor<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values (row-major).
    pub data: &'a [f32],
}

/// Writes f32 tensors to `path` atomically (a temporary file in the same folder, then rename).
pub fn write_f32(
    path: &Path,
    tensors: &[WriteTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_tensors(path, tensors, metadata, Dtype::F32)
}

/// Writes tensors to `path` atomically, stored as `dtype` (F32, F16 or BF16; values are
/// rounded to nearest).
pub fn write_tensors(
    path: &Path,
    tensors: &[WriteTensor<'_>],
    metadata: &BTreeMap<String, String>,
    dtype: Dtype,
) -> Result<()> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(Error::InvalidRequest(format!(
                "cannot write tensors as {}",
                other.name()
            )));
        }
    };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return Err(Error::InvalidRequest(format!(
                "tensor '{}' has {} values for shape {:?}",
                t.name,
                t.data.len(),
                t.shape
            )));
        }
        header.insert(
            t.name.to_owned(),
            serde_json::json!({"dtype": dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + width * n]}),
        );
        offset += width * n;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap_or_default();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for t in tensors {
        for &v in t.data {
            match dtype {
                Dtype::F16 => bytes.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                Dtype::BF16 => bytes.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
                _ => bytes.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
    crate::fs::write_atomic(path, &bytes)
}

#[cfg(test)]
mod header_length_tests {
    use super::*;

    #[test]
    fn a_header_length_that_starts_like_a_pickle_is_still_safetensors() {
        // Pad the metadata until the header is exactly 0x0580 bytes: the file starts 80 05.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.safetensors");
        let data = [1.0f32, 2.0];
        for pad in 0..2000 {
            let mut meta = BTreeMap::new();
            meta.insert("pad".to_owned(), "x".repeat(pad));
            write_f32(
                &path,
                &[WriteTensor {
                    name: "t",
                    shape: vec![2],
                    data: &data,
                }],
                &meta,
            )
            .expect("write");
            let bytes = std::fs::read(&path).expect("read");
            if bytes[0] == 0x80 && bytes[1] == 0x05 {
                assert_eq!(
                    SafeTensors::open(&path)
                        .expect("opens")
                        .f32("t")
                        .expect("tensor"),
                    data
                );
                return;
            }
        }
        panic!("no padding gave a 0x0580 header");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lazily opened file reads each tensor from disk, as f32 or straight into a half
    /// type, with the same values as a file read whole; a file cut short after its header
    /// was read is an I/O error, not a panic.
    #[test]
    fn lazy_reads_match_whole_reads_in_every_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("h.safetensors");
        let data = [1.0f32, -2.5, 0.1, 65504.0, 1e-8, 3.0];
        let t = |name| WriteTensor {
            name,
            shape: vec![2, 3],
            data: &data,
        };
        write_tensors(&p, &[t("a"), t("b")], &BTreeMap::new(), Dtype::F16).expect("write");
        let whole = SafeTensors::open(&p).expect("open");
        let lazy = SafeTensors::open_lazy(&p).expect("open lazily");
        assert!(lazy.data().is_empty(), "nothing but the header in memory");
        assert_eq!(lazy.f32("b").expect("f32"), whole.f32("b").expect("f32"));
        let half = lazy.tensor_data("a", DType::F16).expect("f16");
        assert_eq!(half.dtype(), DType::F16);
        assert_eq!(half.shape().to_vec(), [2, 3]);
        assert_eq!(
            half.convert::<f32>().try_to_vec::<f32>().expect("values"),
            whole.f32("a").expect("f32")
        );
        let bf = lazy.tensor_data("a", DType::BF16).expect("bf16");
        assert_eq!(bf.dtype(), DType::BF16);
        let full = lazy.tensor_data("a", DType::F32).expect("f32");
        assert_eq!(full.dtype(), DType::F32);
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() - 4]).expect("cut");
        assert!(matches!(lazy.f32("b"), Err(Error::Io { .. })));
    }

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.safetensors");
        let data = [1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0];
        write_f32(
            &p,
            &[WriteTensor {
                name: "x",
                shape: vec![2, 3],
                data: &data,
            }],
            &BTreeMap::new(),
        )
        .expect("write");
        let st = SafeTensors::open(&p).expect("open");
        assert_eq!(st.info("x").map(|i| i.shape.clone()), Some(vec![2, 3]));
        assert_eq!(st.f32("x").expect("read"), data);
        let bytes = std::fs::read(&p).expect("read");
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
        let err = SafeTensors::open(&cut)
            .expect_err("truncated must fail")
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    /// Hostile sizes (fuzz/seeds/safetensors): a header announcing 2⁶⁰ bytes, and a shape
    /// whose element count overflows (2³² × 2³² × 16 wraps to 0 in 64 bits, which matched
    /// the 0 bytes stored) are refused by name without allocating.
    #[test]
    fn hostile_sizes_are_refused_by_name() {
        let p = Path::new("hostile.safetensors");
        let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = SafeTensors::from_bytes(p, bytes)
            .expect_err("2^60")
            .to_string();
        assert!(err.contains("no valid header"), "{err}");
        let header =
            br#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        let err = SafeTensors::from_bytes(p, bytes)
            .expect_err("overflow")
            .to_string();
        assert!(err.contains("'x'") && err.contains("overflows"), "{err}");
    }
}
