// A missing comma between two arguments.
cnn::cnn! {
    model Broken(input = [1, 28, 28]) {
        conv2d(out_channels = 8 kernel_size = 3),
        flatten,
        linear(out_features = 10),
    }
}

fn main() {}
