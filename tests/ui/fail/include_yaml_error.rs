// The canonical bug in an included YAML file: the error points at the path literal and carries
// the file's line:col and snippet.
cnn::cnn!(include "../../../examples/models/seed_bug.yaml");

fn main() {
    let _ = SeedCnn::init(0);
}
