//! Times individual Burn ops at the shapes the tiny and SD 1.5 models use (a profiling aid,
//! not a benchmark of record): `cargo run -p kiln-engine --example op_timing`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use kiln_engine::burn::tensor::activation::{silu, softmax};
use kiln_engine::burn::tensor::module::attention;
use kiln_engine::burn::tensor::ops::AttentionModuleOptions;
use kiln_engine::burn::tensor::{Device, Tensor};
use kiln_engine::schedulers::Noise;

fn time<F: FnMut() -> Tensor<4>>(name: &str, mut f: F) {
    let _ = f().into_data();
    let t0 = Instant::now();
    let n = 5;
    for _ in 0..n {
        let _ = f().into_data();
    }
    println!(
        "{name}: {:.2} ms",
        t0.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

fn main() {
    let device: Device = kiln_engine::device::device("cpu").unwrap();
    let mut noise = Noise::new(&[1, 2, 3, 4]);
    let q = noise.randn([4, 4, 1024, 8], &device);
    let k = noise.randn([4, 4, 1024, 8], &device);
    let v = noise.randn([4, 4, 1024, 8], &device);
    time("attention [4,4,1024,8]", || {
        attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
    });
    let (q3, k3, v3) = (
        q.clone().swap_dims(1, 2).reshape([4, 1024, 32]),
        k.clone().swap_dims(1, 2).reshape([4, 1024, 32]),
        v.clone().swap_dims(1, 2).reshape([4, 1024, 32]),
    );
    time("host attention [4,1024,4x8]", || {
        kiln_engine::models::cpu_attention::attention(q3.clone(), k3.clone(), v3.clone(), 4)
            .reshape([4, 1024, 4, 8])
    });
    time("q@kT [4,4,1024,1024]", || {
        q.clone().matmul(k.clone().swap_dims(2, 3))
    });
    let s = q.clone().matmul(k.clone().swap_dims(2, 3));
    time("softmax [4,4,1024,1024]", || softmax(s.clone(), 3));
    time("exp [4,4,1024,1024]", || s.clone().exp());
    time("silu [4,4,1024,1024]", || silu(s.clone()));
    let mut n2 = Noise::new(&[1, 2]);
    let (q, k, v) = (
        n2.randn([2, 8, 1024, 40], &device),
        n2.randn([2, 8, 1024, 40], &device),
        n2.randn([2, 8, 1024, 40], &device),
    );
    time("attention [2,8,1024,40]", || {
        attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
    });
    let (q3, k3, v3) = (
        q.clone().swap_dims(1, 2).reshape([2, 1024, 320]),
        k.clone().swap_dims(1, 2).reshape([2, 1024, 320]),
        v.clone().swap_dims(1, 2).reshape([2, 1024, 320]),
    );
    time("host attention [2,1024,8x40]", || {
        kiln_engine::models::cpu_attention::attention(q3.clone(), k3.clone(), v3.clone(), 8)
            .reshape([2, 1024, 8, 40])
    });
    let (q, k, v) = (
        n2.randn([2, 8, 4096, 40], &device),
        n2.randn([2, 8, 4096, 40], &device),
        n2.randn([2, 8, 4096, 40], &device),
    );
    time("attention [2,8,4096,40] (SD 1.5 at 512x512)", || {
        attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
    });
    let (q3, k3, v3) = (
        q.clone().swap_dims(1, 2).reshape([2, 4096, 320]),
        k.clone().swap_dims(1, 2).reshape([2, 4096, 320]),
        v.clone().swap_dims(1, 2).reshape([2, 4096, 320]),
    );
    time("host attention [2,4096,8x40]", || {
        kiln_engine::models::cpu_attention::attention(q3.clone(), k3.clone(), v3.clone(), 8)
            .reshape([2, 4096, 8, 40])
    });
    let x = noise.randn([4, 32, 32, 32], &device);
    let gn = kiln_engine::models::layers::GroupNorm {
        weight: kiln_engine::burn::module::Param::from_tensor(Tensor::ones([32], &device)),
        bias: kiln_engine::burn::module::Param::from_tensor(Tensor::zeros([32], &device)),
        num_groups: 32,
        eps: 1e-5,
    };
    time("group_norm [4,32,32,32]", || gn.forward(x.clone()));
    time("silu [4,32,32,32]", || silu(x.clone()));
}
