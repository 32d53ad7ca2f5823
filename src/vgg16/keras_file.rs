//! What a Keras weights file is, without reading it: the HDF5 signature and the kernel
//! convention. Always built, so that a build without the `h5` feature (no libhdf5) still
//! recognises a `.h5` file and says what it needs.

use std::fmt;
use std::path::Path;

/// The kernel convention of a Keras file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convention {
    /// TensorFlow kernels: cross-correlation (as stored by the contract, docs/contract.md#weights).
    Tf,
    /// Theano kernels: true convolution, flipped 180° relative to cross-correlation.
    Th,
}

impl fmt::Display for Convention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Convention::Tf => "tf",
            Convention::Th => "th",
        })
    }
}

/// True when the file starts with the HDF5 signature (at offset 0; user blocks
/// of 512·2ⁿ bytes are also checked).
pub fn is_hdf5(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const SIG: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut off = 0u64;
    while off + 8 <= len {
        let mut buf = [0u8; 8];
        if f.seek(SeekFrom::Start(off)).is_err() || f.read_exact(&mut buf).is_err() {
            return false;
        }
        if &buf == SIG {
            return true;
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    false
}
