// A conv2d declares 3 input channels, but the image has 1; a batchnorm2d expects 32 features
// where there are 16. Both are reported.
cnn::cnn! {
    model Many(input = [1, 28, 28]) {
        conv2d(in_channels = 3, out_channels = 16, kernel_size = 5, padding = 2),
        relu,
        maxpool2d(2),
        batchnorm2d(num_features = 32),
        flatten,
        linear(out_features = 10),
    }
}

fn main() {}
