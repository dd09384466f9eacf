// Misspelt layer kinds get a suggestion.
cnn::cnn! {
    model Typo(input = [1, 28, 28]) {
        conv2(out_channels = 8, kernel_size = 3),
        relu,
        flaten,
        linear(out_features = 10),
    }
}

fn main() {}
