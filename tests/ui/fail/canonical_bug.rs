// The classic bug: `in_features` written for 32 channels after a conv that yields 64.
// The error underlines `32*7*7`; code using the model adds no errors of its own.
cnn::cnn! {
    model SeedCnn(input = [1, 28, 28]) -> [10] {
        block conv1 {
            conv2d(out_channels = 16, kernel_size = 5, stride = 1, padding = 2),
            relu,
            maxpool2d(kernel_size = 2),
        }
        block conv2 {
            conv2d(out_channels = 32, kernel_size = 5, padding = 2),
            relu,
            conv2d(in_channels = 32, out_channels = 32, kernel_size = 5, padding = 2),
            relu,
            maxpool2d(2),
        }
        block conv3 {
            conv2d(out_channels = 64, kernel_size = 5, padding = 2),
            relu,
        }
        flatten,
        out: linear(in_features = 32*7*7, out_features = 10),
    }
}

fn main() {
    let mut model = SeedCnn::init(0).unwrap();
    let batch = vec![[0.0f32; 784]; 2];
    let logits: &[[f32; 10]] = model.forward(&batch);
    println!("{logits:?} {}", SeedCnn::SUMMARY);
}
