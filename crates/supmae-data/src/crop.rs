//! A crop rectangle of an image's pixels: what a `RandomResizedCrop` keeps, and what a
//! source may decode alone ([`crate::ImageSource::load_part`]).

use crate::error::{DataError, Result};

/// A crop rectangle in pixels (torchvision's `i, j, h, w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row (`i`).
    pub top: u32,
    /// First column (`j`).
    pub left: u32,
    /// Rows (`h`).
    pub height: u32,
    /// Columns (`w`).
    pub width: u32,
}

/// Asks `pick` for the box it will use of a `width × height` image (never for an empty
/// image: `None`) and checks that the box is non-empty and inside the image.
pub(crate) fn pick_box(
    pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
    width: u32,
    height: u32,
) -> Result<Option<CropBox>> {
    if width == 0 || height == 0 {
        return Ok(None);
    }
    let picked = pick(width, height)?;
    if let Some(b) = picked {
        check_box(b, width, height)?;
    }
    Ok(picked)
}

/// A picked box must be non-empty and inside the image.
fn check_box(b: CropBox, width: u32, height: u32) -> Result<()> {
    let fits = |start: u32, len: u32, size: u32| {
        len > 0 && start.checked_add(len).is_some_and(|end| end <= size)
    };
    if fits(b.left, b.width, width) && fits(b.top, b.height, height) {
        Ok(())
    } else {
        Err(DataError::InvalidConfig {
            field: "crop",
            reason: format!("box {b:?} is empty or not inside the {width}x{height} image"),
        })
    }
}
