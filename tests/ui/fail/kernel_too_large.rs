// Two poolings shrink 24×24 to 6×6; a 7×7 kernel no longer fits.
cnn::cnn! {
    model Shrinks(input = [1, 28, 28]) {
        conv2d(1, 8, kernel_size = 5),
        maxpool2d(2),
        maxpool2d(2),
        conv2d(8, 16, kernel_size = 7),
    }
}

fn main() {}
