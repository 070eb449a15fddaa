//! What a `torch.save` pickle says about one tensor: its storage's element type and the
//! view into it. Both the unpickler ([`super::pickle`]), which builds these references,
//! and the zip reader ([`super::torch`]), which checks and reads them, use this module.

/// Element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Whether values are floating point.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64 | Self::F16 | Self::BF16)
    }

    pub(super) fn to_f64(self, b: &[u8]) -> f64 {
        let a2 = || [b[0], b[1]];
        let a4 = || [b[0], b[1], b[2], b[3]];
        let a8 = || [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        match self {
            Self::F32 => f32::from_le_bytes(a4()).into(),
            Self::F64 => f64::from_le_bytes(a8()),
            Self::F16 => half::f16::from_le_bytes(a2()).into(),
            Self::BF16 => half::bf16::from_le_bytes(a2()).into(),
            Self::I64 => i64::from_le_bytes(a8()) as f64,
            Self::I32 => i32::from_le_bytes(a4()).into(),
            Self::I16 => i16::from_le_bytes(a2()).into(),
            Self::I8 => (b[0] as i8).into(),
            Self::U8 | Self::Bool => b[0].into(),
        }
    }
}

/// A tensor of a `torch.save` file: which storage, where in it, and its layout. Built only
/// when its offset, shape and strides are non-negative and its extent fits in `u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage record key (`data/<key>` in the zip).
    pub storage: String,
    /// Element type.
    pub dtype: Dtype,
    /// Elements the storage declares.
    pub storage_numel: u64,
    /// First element, in elements.
    pub offset: u64,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
    /// One past the last storage element the tensor reads (0 for an empty tensor).
    pub extent: u64,
}

impl TensorRef {
    pub(super) fn new(
        storage: String,
        dtype: Dtype,
        storage_numel: u64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> Result<Self, String> {
        let bad = |what: &str| format!("a tensor in storage {storage} has {what}");
        let offset = u64::try_from(offset).map_err(|_| bad("a negative storage offset"))?;
        if shape.len() != stride.len() {
            return Err(bad("as many strides as dimensions"));
        }
        let mut extent = offset.checked_add(1);
        let mut numel: u64 = 1;
        for (&n, &s) in shape.iter().zip(stride) {
            let n = u64::try_from(n).map_err(|_| bad("a negative dimension"))?;
            let s = u64::try_from(s).map_err(|_| bad("a negative stride"))?;
            numel = numel
                .checked_mul(n)
                .ok_or_else(|| bad("an overflowing size"))?;
            let reach = n.saturating_sub(1).checked_mul(s);
            extent = extent.zip(reach).and_then(|(e, r)| e.checked_add(r));
        }
        let extent = if numel == 0 {
            0
        } else {
            extent.ok_or_else(|| bad("an overflowing size"))?
        };
        if extent > storage_numel {
            return Err(format!(
                "a tensor reads {extent} elements of storage {storage}, which declares {storage_numel}"
            ));
        }
        let shape = shape.iter().map(|&n| n as usize).collect::<Vec<_>>();
        if shape
            .iter()
            .try_fold(1usize, |a, &n| a.checked_mul(n))
            .is_none()
        {
            return Err(bad("an overflowing size"));
        }
        Ok(Self {
            storage,
            dtype,
            storage_numel,
            offset,
            shape,
            stride: stride.iter().map(|&s| s as u64).collect(),
            extent,
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
