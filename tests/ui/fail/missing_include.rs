// The path is resolved relative to this file, like include_str!.
cnn::cnn!(include "models/no_such_model.yaml");

fn main() {}
