//! The plan (`cnn_ir::plan`) of real models, compiled from their specs.

use cnn_dsl::plan::{Loc, Mode, plan};
use cnn_dsl::{SourceMap, compile_source};

#[test]
fn seed_plan_fuses_relu_and_ping_pongs() {
    let text = include_str!("../../examples/models/seed.cnn");
    let m = compile_source(&mut SourceMap::new(), "seed.cnn", text).unwrap();
    let p = plan(&m, Mode::Infer);
    let paths: Vec<_> = p.steps.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "conv1.0+conv1.1",
            "conv1.2",
            "conv2.0+conv2.1",
            "conv2.2+conv2.3",
            "conv2.4",
            "conv3.0+conv3.1",
            "out"
        ]
    );
    assert_eq!(p.steps[0].src, Loc::Input);
    for w in p.steps.windows(2) {
        assert_eq!(w[0].dst, w[1].src);
        assert_ne!(w[1].src, w[1].dst);
    }
    assert_eq!(p.buffer_len, 16 * 28 * 28);
    assert_eq!(p.steps[6].params, [8, 9]);
    assert_eq!(p.output_len(), 10);
}

fn compile(text: &str) -> cnn_dsl::CheckedModel {
    compile_source(&mut SourceMap::new(), "m.cnn", text).expect("well-shaped")
}

#[test]
fn one_fusion_rule_for_both_modes() {
    // A negative LeakyReLU slope flips the sign, so its derivative cannot be recovered from the
    // fused output: fused for inference only. ReLU and a positive slope fuse in both modes.
    let m = compile(
        "model M(input = [1, 8, 8]) { conv2d(1, 2, 3), leaky_relu(negative_slope = -0.5), conv2d(2, 2, 3), \
         leaky_relu(negative_slope = 0.1), conv2d(2, 2, 1), relu, flatten, linear(2*4*4, 3) }",
    );
    let paths = |mode| {
        plan(&m, mode)
            .steps
            .iter()
            .map(|s| s.path.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(Mode::Infer), ["0+1", "2+3", "4+5", "7"]);
    assert_eq!(paths(Mode::Train), ["0", "1", "2+3", "4+5", "6", "7"]);
}

#[test]
fn training_plan_keeps_every_output_and_elides_inner_flatten() {
    let m = compile(
        "model M(input = [1, 6, 6]) { conv2d(1, 2, 3), sigmoid, dropout(0.25), flatten, \
         linear(2*4*4, 3), flatten }",
    );
    let p = plan(&m, Mode::Train);
    assert_eq!(p.mode, Mode::Train);
    let routes: Vec<_> = p.steps.iter().map(|s| (s.src, s.dst)).collect();
    assert_eq!(
        routes,
        [
            (Loc::Input, Loc::Buf(0)),
            (Loc::Buf(0), Loc::Buf(1)),
            (Loc::Buf(1), Loc::Buf(2)),
            // Inner flatten: writes nothing, the linear reads the dropout's buffer.
            (Loc::Buf(2), Loc::Buf(2)),
            (Loc::Buf(2), Loc::Buf(4)),
            // The last flatten is the model's output, so it has its own buffer.
            (Loc::Buf(4), Loc::Buf(5)),
        ]
    );
    assert_eq!(p.output, Loc::Buf(5));
    let lens: Vec<_> = p.steps.iter().map(|s| (s.in_len, s.out_len)).collect();
    assert_eq!(lens[0], (36, 32));
    assert_eq!(lens[4], (32, 3));
    // Every written buffer is kept: 32 + 32 + 32 + 3 + 3 floats per image.
    assert_eq!(p.activation_floats(2), 2 * (32 * 3 + 3 + 3));
    // The inference plan of the same model ping-pongs and skips dropout and flatten.
    let q = plan(&m, Mode::Infer);
    assert_eq!(q.steps.len(), 3);
    assert_eq!(q.activation_floats(2), 2 * 2 * 32);
}
