// The seed model inline: compiles, initialises and runs a batch.
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
        out: linear(in_features = 64*7*7, out_features = 10),
    }
}

fn main() {
    let mut model = SeedCnn::init(0).unwrap();
    let batch = vec![[0.5f32; 784]; 2];
    let logits: &[[f32; 10]] = model.forward(&batch);
    assert_eq!(logits.len(), 2);
    assert_eq!(SeedCnn::param_count(), 121_514);
}
