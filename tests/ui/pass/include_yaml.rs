// The seed model included from examples/models/seed.yaml (relative to this file).
cnn::cnn!(include "../../../examples/models/seed.yaml");

fn main() {
    let mut model = SeedCnn::init(0).unwrap();
    let batch = vec![[0.5f32; SeedCnn::INPUT_LEN]; 2];
    let logits: &[[f32; 10]] = model.forward(&batch);
    assert_eq!(logits.len(), 2);
    assert!(SeedCnn::SUMMARY.contains("conv2.2"));
}
