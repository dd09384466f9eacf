//! The naive backward every fast path is tested against.

use super::*;

/// Direct-loop backward of `nn.Conv2d`, single-threaded, accumulating in `f64`: the slow, obvious
/// version of [`conv2d_backward`] (same arguments and overwrite semantics, no scratch), kept as
/// the reference for tests and benchmarks.
#[expect(clippy::too_many_arguments, reason = "mirrors conv2d_backward")]
pub fn conv2d_backward_reference(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
) {
    let pl = plan(g, batch);
    check_len(
        "conv2d_backward_reference input",
        input.len(),
        batch * g.in_len(),
    );
    check_len(
        "conv2d_backward_reference weight",
        weight.len(),
        g.weight_len(),
    );
    check_len(
        "conv2d_backward_reference d_out",
        d_out.len(),
        batch * g.out_len(),
    );
    check_len(
        "conv2d_backward_reference d_weight",
        d_weight.len(),
        g.weight_len(),
    );
    let mut dx = vec![0.0f64; batch * g.in_len()];
    let mut dw = vec![0.0f64; g.weight_len()];
    let mut db = vec![0.0f64; g.out_channels];
    for n in 0..batch {
        for co in 0..g.out_channels {
            let grp = co / pl.cout_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let gy =
                        f64::from(d_out[((n * g.out_channels + co) * g.out_h + oh) * g.out_w + ow]);
                    db[co] += gy;
                    for ci in 0..pl.cin_g {
                        let c = grp * pl.cin_g + ci;
                        for kh in 0..g.kernel_h {
                            let ih =
                                (oh * g.stride_h + kh * g.dilation_h) as isize - g.pad_top as isize;
                            if ih < 0 || ih >= g.in_h as isize {
                                continue;
                            }
                            for kw in 0..g.kernel_w {
                                let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                    - g.pad_left as isize;
                                if iw < 0 || iw >= g.in_w as isize {
                                    continue;
                                }
                                let xi = ((n * g.in_channels + c) * g.in_h + ih as usize) * g.in_w
                                    + iw as usize;
                                let wi = ((co * pl.cin_g + ci) * g.kernel_h + kh) * g.kernel_w + kw;
                                dw[wi] += gy * f64::from(input[xi]);
                                dx[xi] += gy * f64::from(weight[wi]);
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, s) in d_weight.iter_mut().zip(&dw) {
        *d = *s as f32;
    }
    if let Some(d) = d_bias {
        check_len("conv2d_backward_reference d_bias", d.len(), g.out_channels);
        for (d, s) in d.iter_mut().zip(&db) {
            *d = *s as f32;
        }
    }
    if let Some(d) = d_input {
        check_len(
            "conv2d_backward_reference d_input",
            d.len(),
            batch * g.in_len(),
        );
        for (d, s) in d.iter_mut().zip(&dx) {
            *d = *s as f32;
        }
    }
}
