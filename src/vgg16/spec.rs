//! The 13 convolutions of VGG16 (conv1_1 … conv5_3), as one table.
//!
//! Every other module (weights loading, importers, backends, benchmarks) walks
//! this table instead of repeating layer names or channel counts.

/// One 3×3 convolution layer (stride 1, zero padding 1, bias, ReLU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Keras layer name, e.g. `block3_conv2`.
    pub name: &'static str,
    /// VGG block (1..=5); a 2×2 max-pool follows the last conv of each block.
    pub block: usize,
    pub cin: usize,
    pub cout: usize,
    /// True for the last conv of a block (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3).
    pub pool_after: bool,
}

const fn conv(
    name: &'static str,
    block: usize,
    cin: usize,
    cout: usize,
    pool_after: bool,
) -> ConvSpec {
    ConvSpec {
        name,
        block,
        cin,
        cout,
        pool_after,
    }
}

/// VGG16's convolution base in forward order.
pub const VGG16_CONVS: [ConvSpec; 13] = [
    conv("block1_conv1", 1, 3, 64, false),
    conv("block1_conv2", 1, 64, 64, true),
    conv("block2_conv1", 2, 64, 128, false),
    conv("block2_conv2", 2, 128, 128, true),
    conv("block3_conv1", 3, 128, 256, false),
    conv("block3_conv2", 3, 256, 256, false),
    conv("block3_conv3", 3, 256, 256, true),
    conv("block4_conv1", 4, 256, 512, false),
    conv("block4_conv2", 4, 512, 512, false),
    conv("block4_conv3", 4, 512, 512, true),
    conv("block5_conv1", 5, 512, 512, false),
    conv("block5_conv2", 5, 512, 512, false),
    conv("block5_conv3", 5, 512, 512, true),
];

/// Channels of the pool5 map (and of the R-MAC vector).
pub const FEATURE_DIM: usize = 512;

/// Kernel size (3×3 everywhere in VGG16).
pub const KERNEL: usize = 3;

impl ConvSpec {
    /// safetensors key of the kernel, `[3, 3, cin, cout]` (HWIO).
    pub fn kernel_key(&self) -> String {
        format!("{}.kernel", self.name)
    }
    /// safetensors key of the bias, `[cout]`.
    pub fn bias_key(&self) -> String {
        format!("{}.bias", self.name)
    }
    /// Number of kernel weights (3·3·cin·cout).
    pub fn kernel_len(&self) -> usize {
        KERNEL * KERNEL * self.cin * self.cout
    }
    /// Multiply-adds ×2 for an `h × w` input (same-padded output).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        2.0 * (h * w) as f64 * self.kernel_len() as f64
    }
}

/// Size of the pool5 map for a `h × w` input: five floor-halvings.
pub fn pool5_size(h: usize, w: usize) -> (usize, usize) {
    (h >> 5, w >> 5)
}
