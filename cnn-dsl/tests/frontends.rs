//! The YAML and DSL front-ends describe the same model the same way.

use cnn_dsl::{SourceMap, compile_source};

fn load(name: &str) -> cnn_dsl::CheckedModel {
    let path = format!("{}/../examples/models/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example exists");
    let mut sources = SourceMap::new();
    compile_source(&mut sources, &path, &text)
        .unwrap_or_else(|d| panic!("{name} must check: {d:?}"))
}

#[test]
fn yaml_and_dsl_seed_models_are_equal() {
    let yaml = load("seed.yaml");
    let dsl = load("seed.cnn");
    assert_eq!(yaml.name(), "SeedCnn");
    assert_eq!(yaml.name(), dsl.name());
    assert_eq!(yaml.input_shape(), dsl.input_shape());
    assert_eq!(yaml.layers().len(), dsl.layers().len());
    for (a, b) in yaml.layers().iter().zip(dsl.layers()) {
        assert_eq!(a.layer.path, b.layer.path);
        assert_eq!(a.op, b.op, "{}", a.layer.path);
        assert_eq!(a.tensors, b.tensors, "{}", a.layer.path);
        assert_eq!(a.output, b.output, "{}", a.layer.path);
    }
}

#[test]
fn seed_model_numbers_match_pytorch() {
    let m = load("seed.yaml");
    let names: Vec<_> = m.tensors().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1.0.weight",
            "conv1.0.bias",
            "conv2.0.weight",
            "conv2.0.bias",
            "conv2.2.weight",
            "conv2.2.bias",
            "conv3.0.weight",
            "conv3.0.bias",
            "out.weight",
            "out.bias"
        ]
    );
    assert_eq!(m.param_count(), 121_514);
    let macs: Vec<u64> = m
        .layers()
        .iter()
        .filter(|l| l.macs > 0)
        .map(|l| l.macs)
        .collect();
    assert_eq!(macs, [313_600, 2_508_800, 5_017_600, 2_508_800, 31_360]);
    assert_eq!(m.output_shape(), &[10]);
    let w = m.tensors().find(|t| t.name == "conv2.2.weight").unwrap();
    assert_eq!(w.shape, [32, 32, 5, 5]);
    let out = m.tensors().find(|t| t.name == "out.weight").unwrap();
    assert_eq!(out.shape, [10, 3136]);
}

#[test]
fn seed_plus_conv_checks() {
    let m = load("seed_plus_conv.yaml");
    assert_eq!(m.output_shape(), &[10]);
    assert!(m.param_count() > 121_514);
}

#[test]
fn negative_float_attributes_read_the_same_in_every_front_end() {
    use cnn_dsl::check::{Activation, Op};
    let op = |name: &str, text: &str| {
        let m = compile_source(&mut SourceMap::new(), name, text)
            .unwrap_or_else(|d| panic!("{name} must check: {d:?}"));
        m.layers()[0].op.clone()
    };
    let want = Op::Activation {
        act: Activation::LeakyRelu(-0.2),
        len: 4,
    };
    let yaml = "name: M\ninput: [4]\nlayers:\n  - leaky_relu: { negative_slope: -0.2 }\n";
    assert_eq!(op("m.yaml", yaml), want);
    let dsl = "model M(input = [4]) { leaky_relu(negative_slope = -0.2) }";
    assert_eq!(op("m.cnn", dsl), want);
    // The macro front-end prints its tokens (`-` and `0.2` are two) before parsing.
    let tokens: proc_macro2::TokenStream = dsl.parse().expect("tokens");
    let text = cnn_dsl::expand::TokenText::new(tokens).text;
    assert_eq!(op("m.cnn", &text), want);
}
