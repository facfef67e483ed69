"""Lab 4 (transformers as dynamical systems): wrong answers a student might write, and other
correct routes.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the check and the rubric must reject the
function, and the check's message must contain ``hint``. ``VALID[exercise]`` lists ``(name,
function)``: other correct implementations that both must accept. ``SOLUTIONS`` holds the lab's
own answers (the solution notebook's code). Exercises that call an earlier one (attention_velocity
calls project_tangent, continuity_rhs calls circle_velocity, convergence_order calls integrate and
attention_velocity) call the solutions here, as a student's notebook would call their own; the
check and the rubric run them with labcore's version of the earlier exercise in its place, and
:func:`mistakes.notebook` writes entries that call a wrong earlier exercise, which must cost nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from labcore import dynamics as D
from labcore import mean_field as MF
from mistakes import notebook

F64 = torch.float64


# ============================================================================ the solutions
def project_tangent(x, v):
    return v - (x * v).sum(dim=-1, keepdim=True) * x


def attention_velocity(x, beta, Q=None, K=None, V=None):
    q = x if Q is None else x @ Q.T  # (..., n, d_head)
    k = x if K is None else x @ K.T  # (..., n, d_head)
    v = x if V is None else x @ V.T  # (..., n, d)
    weights = torch.softmax(beta * q @ k.transpose(-2, -1), dim=-1)  # (..., n, n)
    return project_tangent(x, weights @ v)


def euler_step(velocity, x, dt):
    return x + dt * velocity(x)


def rk4_step(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(velocity, x0, t_max, n_steps, step, renormalize=True):
    dt = t_max / n_steps
    frames = [x0]
    x = x0
    for _ in range(n_steps):
        x = step(velocity, x, dt)
        if renormalize:
            x = x / x.norm(dim=-1, keepdim=True)
        frames.append(x)
    return torch.stack(frames)


def two_particle_gap(phi0, t):
    return 2 * math.atan(math.tan(phi0 / 2) * math.exp(-t))


def gap(x):
    return torch.remainder(D.to_angles(x[1]) - D.to_angles(x[0]), 2 * math.pi).item()


def _errors(step, dts, t_max, phi0, *, n_steps=None):
    x0 = D.from_angles(torch.tensor([0.0, phi0], dtype=F64))
    exact = two_particle_gap(phi0, t_max)
    errors = []
    for dt in dts:
        n = round(t_max / dt) if n_steps is None else n_steps(t_max, dt)
        x = integrate(lambda y: attention_velocity(y, 0.0), x0, t_max, n, step)[-1]
        errors.append(abs(gap(x) - exact))
    return errors


def convergence_order(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def cluster_counts(x0, betas, t_max, dt, tol, record_every=1):
    counts = []
    for beta in betas:
        trajectory = D.simulate(
            x0,
            t_max,
            dt,
            lambda x, beta=beta: D.attention_velocity(x, beta),
            record_every=record_every,
            progress=False,
        )
        counts.append(D.count_clusters(trajectory, tol))
    return torch.stack(counts)


def circle_velocity(rho, beta):
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1, device=rho.device)
    keep = (k <= (n - 1) // 2).to(rho.dtype)  # drop the Nyquist frequency
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    z_hat = c * keep * torch.fft.rfft(rho)
    z = torch.fft.irfft(z_hat, n=n)
    dz = torch.fft.irfft(1j * k.to(rho.dtype) * z_hat, n=n)
    return dz / (beta * z)


def continuity_rhs(rho, beta):
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1, device=rho.device)
    ik = 1j * (k * (k <= (n - 1) // 2)).to(rho.dtype)
    return -torch.fft.irfft(ik * torch.fft.rfft(rho * circle_velocity(rho, beta)), n=n)


def _k_star(beta, shift=0):
    k_max = 4 * math.ceil(math.sqrt(beta)) + 4
    return int(MF.circle_growth_rates(beta, k_max).argmax()) + shift


def _merge(beta, phi0, phi_end, one=1.0, dtype=F64):
    phi = torch.linspace(phi_end, phi0, 20001, dtype=dtype)
    integrand = (one + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
    return torch.trapezoid(integrand, phi)


def first_merge_time(betas, phi_end=0.05):
    times = []
    for beta in betas:
        k_max = 4 * math.ceil(math.sqrt(beta)) + 4
        k_star = int(MF.circle_growth_rates(beta, k_max).argmax())
        phi = torch.linspace(phi_end, 2 * math.pi / k_star, 20001, dtype=torch.float64)
        integrand = (1 + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        times.append(torch.trapezoid(integrand, phi))
    return torch.stack(times)


SOLUTIONS = {
    "project_tangent": project_tangent,
    "attention_velocity": attention_velocity,
    "euler_step": euler_step,
    "rk4_step": rk4_step,
    "integrate": integrate,
    "convergence_order": convergence_order,
    "cluster_counts": cluster_counts,
    "circle_velocity": circle_velocity,
    "continuity_rhs": continuity_rhs,
    "first_merge_time": first_merge_time,
}


# ============================================================================ exercise 1
def _pt_seed_slip(x, v):
    return v - (x * v).sum(-1, keepdim=True) * v


def _pt_radial(x, v):
    return (x * v).sum(-1, keepdim=True) * x


def _pt_sum_all(x, v):
    return v - (x * v).sum() * x


def _pt_no_keepdim(x, v):
    return v - (x * v).sum(-1) * x


def _pt_in_place(x, v):
    return v.sub_((x * v).sum(-1, keepdim=True) * x)


def _pt_double(x, v):
    return (v.double() - (x.double() * v.double()).sum(-1, keepdim=True) * x.double()).clone()


def _pt_cpu(x, v):
    out = torch.zeros(x.shape, dtype=x.dtype)  # on the CPU, whatever x's device
    return out + v - (x * v).sum(-1, keepdim=True) * x


def _pt_global_rng(x, v):
    noise = 0 * torch.rand(())  # a draw from the global generator
    return v - (x * v).sum(-1, keepdim=True) * x + noise.to(x.dtype)


def _pt_einsum(x, v):
    return v - torch.einsum("...d,...d->...", x, v).unsqueeze(-1) * x


def _pt_matmul(x, v):
    return v - (x.unsqueeze(-2) @ v.unsqueeze(-1)).squeeze(-1) * x


def _pt_vecdot(x, v):
    return v - torch.linalg.vecdot(x, v)[..., None] * x


# ============================================================================ exercise 2
def _scores(x, beta, Q, K):
    q = x if Q is None else x @ Q.T
    k = x if K is None else x @ K.T
    return beta * q @ k.transpose(-2, -1)


def _values(x, V):
    return x if V is None else x @ V.T


def _av_seed_slip(x, beta, Q=None, K=None, V=None):
    y = torch.softmax(_scores(x, beta, Q, K), dim=-1) @ _values(x, V)
    return y - (x * y).sum(-1, keepdim=True) * y


def _av_unprojected(x, beta, Q=None, K=None, V=None):
    return torch.softmax(_scores(x, beta, Q, K), dim=-1) @ _values(x, V)


def _av_wrong_axis(x, beta, Q=None, K=None, V=None):
    return project_tangent(x, torch.softmax(_scores(x, beta, Q, K), dim=-2) @ _values(x, V))


def _av_v_not_transposed(x, beta, Q=None, K=None, V=None):
    v = x if V is None else x @ V
    return project_tangent(x, torch.softmax(_scores(x, beta, Q, K), dim=-1) @ v)


def _av_naive_softmax(x, beta, Q=None, K=None, V=None):
    e = torch.exp(_scores(x, beta, Q, K))
    return project_tangent(x, e / e.sum(-1, keepdim=True) @ _values(x, V))


def _av_no_beta(x, beta, Q=None, K=None, V=None):
    return project_tangent(x, torch.softmax(_scores(x, 1.0, Q, K), dim=-1) @ _values(x, V))


def _av_no_keepdim(x, beta, Q=None, K=None, V=None):
    y = torch.softmax(_scores(x, beta, Q, K), dim=-1) @ _values(x, V)
    return y - (x * y).sum(-1) * x


def _av_einsum(x, beta, Q=None, K=None, V=None):
    q = x if Q is None else torch.einsum("...nd,hd->...nh", x, Q)
    k = x if K is None else torch.einsum("...nd,hd->...nh", x, K)
    v = x if V is None else torch.einsum("...nd,ed->...ne", x, V)
    weights = torch.softmax(beta * torch.einsum("...ih,...jh->...ij", q, k), dim=-1)
    y = torch.einsum("...ij,...jd->...id", weights, v)
    return y - torch.einsum("...d,...d->...", x, y).unsqueeze(-1) * x


def _av_stable_by_hand(x, beta, Q=None, K=None, V=None):
    scores = _scores(x, beta, Q, K)
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return project_tangent(x, e / e.sum(-1, keepdim=True) @ _values(x, V))


def _av_identity_matrices(x, beta, Q=None, K=None, V=None):
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    Q, K, V = (eye if m is None else m for m in (Q, K, V))
    weights = torch.nn.functional.softmax(beta * (x @ Q.mT) @ (x @ K.mT).mT, dim=-1)
    return project_tangent(x, weights @ (x @ V.mT))


# ============================================================================ exercises 3 and 4
def _eu_backwards(velocity, x, dt):
    return x - dt * velocity(x)


def _eu_no_dt(velocity, x, dt):
    return x + velocity(x)


def _eu_renormalised(velocity, x, dt):
    y = x + dt * velocity(x)
    return y / y.norm(dim=-1, keepdim=True)


def _eu_twice(velocity, x, dt):
    return x + dt * velocity(x) + 0 * velocity(x)


def _eu_in_place(velocity, x, dt):
    return x.add_(dt * velocity(x))


def _eu_increment(velocity, x, dt):
    return dt * velocity(x)


def _eu_alpha(velocity, x, dt):
    return torch.add(x, velocity(x), alpha=dt)


def _eu_clone(velocity, x, dt):
    out = x.clone()
    out += dt * velocity(x)
    return out


def _eu_order(velocity, x, dt):
    return velocity(x) * dt + x


def _rk4_full_steps(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + dt * k1)
    k3 = velocity(x + dt * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def _rk4_equal_weights(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 4) * (k1 + k2 + k3 + k4)


def _rk4_from_k1(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k1)
    k4 = velocity(x + dt * k1)
    return x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def _rk4_no_dt(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + (dt / 2) * k1)
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (k1 + 2 * k2 + 2 * k3 + k4) / 6


def _rk4_euler(velocity, x, dt):
    return x + dt * velocity(x)


def _rk4_five_calls(velocity, x, dt):
    k2 = velocity(x + (dt / 2) * velocity(x))
    k3 = velocity(x + (dt / 2) * k2)
    k4 = velocity(x + dt * k3)
    return x + (dt / 6) * (velocity(x) + 2 * k2 + 2 * k3 + k4)


def _rk4_tableau(velocity, x, dt):
    a = [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]]
    b = [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    ks = []
    for row in a:
        ks.append(velocity(x + dt * sum((w * k for w, k in zip(row, ks, strict=False)), 0 * x)))
    return x + dt * sum(w * k for w, k in zip(b, ks, strict=True))


def _rk4_thirds(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + 0.5 * dt * k1)
    k3 = velocity(x + 0.5 * dt * k2)
    k4 = velocity(x + dt * k3)
    return x + dt * (k1 / 6 + k2 / 3 + k3 / 3 + k4 / 6)


def _rk4_accumulate(velocity, x, dt):
    total = torch.zeros_like(x)
    k = velocity(x)
    total += k
    k = velocity(x + (dt / 2) * k)
    total += 2 * k
    k = velocity(x + (dt / 2) * k)
    total += 2 * k
    k = velocity(x + dt * k)
    total += k
    return x + dt * total / 6


# ============================================================================ exercise 5
def _int_without_x0(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max, n_steps, step, renormalize)[1:]


def _int_always_renormalised(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max, n_steps, step, True)


def _int_never_renormalised(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max, n_steps, step, False)


def _int_unit_step(velocity, x0, t_max, n_steps, step, renormalize=True):
    frames, x = [x0], x0
    for _ in range(n_steps):
        x = step(velocity, x, 1.0)
        if renormalize:
            x = x / x.norm(dim=-1, keepdim=True)
        frames.append(x)
    return torch.stack(frames)


def _int_one_step_too_many(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max * (n_steps + 1) / n_steps, n_steps + 1, step, renormalize)


def _int_wrong_norm_axis(velocity, x0, t_max, n_steps, step, renormalize=True):
    frames, x = [x0], x0
    for _ in range(n_steps):
        x = step(velocity, x, t_max / n_steps)
        if renormalize:
            x = x / x.norm(dim=0, keepdim=True)
        frames.append(x)
    return torch.stack(frames)


def _int_in_place(velocity, x0, t_max, n_steps, step, renormalize=True):
    frames = [x0.clone()]
    for _ in range(n_steps):
        x0.copy_(step(velocity, x0, t_max / n_steps))
        if renormalize:
            x0.div_(x0.norm(dim=-1, keepdim=True))
        frames.append(x0.clone())
    return torch.stack(frames)


def _int_cpu_buffer(velocity, x0, t_max, n_steps, step, renormalize=True):
    out = torch.empty((n_steps + 1, *x0.shape), dtype=x0.dtype)  # on the CPU, whatever x0's device
    out[0] = x0
    for i in range(n_steps):
        x = step(velocity, out[i], t_max / n_steps)
        out[i + 1] = x / x.norm(dim=-1, keepdim=True) if renormalize else x
    return out


def _int_preallocated(velocity, x0, t_max, n_steps, step, renormalize=True):
    out = x0.new_empty((n_steps + 1, *x0.shape))
    out[0] = x0
    for i in range(n_steps):
        x = step(velocity, out[i], t_max / n_steps)
        out[i + 1] = x / x.norm(dim=-1, keepdim=True) if renormalize else x
    return out


def _int_normalize(velocity, x0, t_max, n_steps, step, renormalize=True):
    frames = [x0]
    for _ in range(n_steps):
        x = step(velocity, frames[-1], t_max / n_steps)
        frames.append(torch.nn.functional.normalize(x, dim=-1, eps=0.0) if renormalize else x)
    return torch.stack(frames, dim=0)


def _int_recursive(velocity, x0, t_max, n_steps, step, renormalize=True):
    if n_steps == 0:
        return x0[None]
    dt = t_max / n_steps
    x = step(velocity, x0, dt)
    if renormalize:
        x = x / x.norm(dim=-1, keepdim=True)
    rest = _int_recursive(velocity, x, t_max - dt, n_steps - 1, step, renormalize)
    return torch.cat([x0[None], rest])


# ============================================================================ exercise 6
def _co_constant(step, dts, t_max=2.0, phi0=1.5):
    return 1.0


def _co_tensor(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    return torch.tensor(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def _co_log10(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    return float(np.polyfit(np.log10(dts), np.log(errors), 1)[0])


def _co_step_ignored(step, dts, t_max=2.0, phi0=1.5):
    return convergence_order(euler_step, dts, t_max, phi0)  # always Euler


def _co_intercept(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[1])


def _co_distance_moved(step, dts, t_max=2.0, phi0=1.5):
    x0 = D.from_angles(torch.tensor([0.0, phi0], dtype=F64))
    errors = []
    for dt in dts:
        x = integrate(lambda y: attention_velocity(y, 0.0), x0, t_max, round(t_max / dt), step)
        errors.append(abs(gap(x[-1]) - phi0))  # not an error: the distance the gap moved
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def _co_numpy_float(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]  # a numpy.float64 is a float


def _co_lstsq(step, dts, t_max=2.0, phi0=1.5):
    errors = _errors(step, dts, t_max, phi0)
    a = torch.stack([torch.log(torch.tensor(dts, dtype=F64)), torch.ones(len(dts), dtype=F64)], 1)
    b = torch.log(torch.tensor(errors, dtype=F64))[:, None]
    return float(torch.linalg.lstsq(a, b).solution[0, 0])


def _co_closed_form(step, dts, t_max=2.0, phi0=1.5):
    xs = [math.log(dt) for dt in dts]
    ys = [math.log(e) for e in _errors(step, dts, t_max, phi0)]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum(
        (a - mx) ** 2 for a in xs
    )


# ============================================================================ exercise 7
def _cc_transposed(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, record_every).transpose(0, 1)


def _cc_int32(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, record_every).int()


def _cc_float(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, record_every).float()


def _cc_every_frame(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, 1)


def _cc_last_frame(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, record_every)[:, -1]


def _cc_list(x0, betas, t_max, dt, tol, record_every=1):
    return list(cluster_counts(x0, betas, t_max, dt, tol, record_every))


def _cc_preallocated(x0, betas, t_max, dt, tol, record_every=1):
    out = None
    for i, beta in enumerate(betas):
        counts = D.count_clusters(
            D.simulate(
                x0,
                t_max,
                dt,
                lambda x, b=beta: D.attention_velocity(x, b),
                record_every=record_every,
                progress=False,
            ),
            tol,
        )
        if out is None:
            out = torch.empty((len(betas), *counts.shape), dtype=torch.int64, device=x0.device)
        out[i] = counts
    return out


def _cc_comprehension(x0, betas, t_max, dt, tol, record_every=1):
    def velocity_at(beta):
        def velocity(x):
            return D.attention_velocity(x, beta)

        return velocity

    return torch.stack(
        [
            D.count_clusters(
                D.simulate(
                    x0, t_max, dt, velocity_at(b), record_every=record_every, progress=False
                ),
                tol,
            )
            for b in betas
        ]
    )


def _cc_partial(x0, betas, t_max, dt, tol, record_every=1):
    import functools

    rows = []
    for beta in betas:
        velocity = functools.partial(D.attention_velocity, beta=beta)
        rows.append(
            D.count_clusters(
                D.simulate(x0, t_max, dt, velocity, record_every=record_every, progress=False),
                tol,
            ).to(torch.int64)
        )
    return torch.stack(rows, dim=0)


# ============================================================================ exercise 8
def _z_hat(rho, beta, keep_nyquist=False):
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1, device=rho.device)
    keep = torch.ones_like(k) if keep_nyquist else (k <= (n - 1) // 2)
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    return c * keep.to(rho.dtype) * torch.fft.rfft(rho), k.to(rho.dtype)


def _cv_nyquist_kept(rho, beta):
    z_hat, k = _z_hat(rho, beta, keep_nyquist=True)
    n = rho.shape[-1]
    return torch.fft.irfft(1j * k * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


def _cv_without_beta(rho, beta):
    z_hat, k = _z_hat(rho, beta)
    n = rho.shape[-1]
    return torch.fft.irfft(1j * k * z_hat, n=n) / torch.fft.irfft(z_hat, n=n)


def _cv_minus_ik(rho, beta):
    z_hat, k = _z_hat(rho, beta)
    n = rho.shape[-1]
    return torch.fft.irfft(-1j * k * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


def _cv_complex(rho, beta):
    z_hat, k = _z_hat(rho, beta)
    full = torch.fft.ifft(torch.cat([z_hat, z_hat[..., 1:].flip(-1).conj()], -1))
    return full[..., : rho.shape[-1]]  # never brought back to a real tensor


def _cv_cpu_coefficients(rho, beta):
    n = rho.shape[-1]
    k = torch.arange(n // 2 + 1)
    keep = (k <= (n - 1) // 2).to(rho.dtype)
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype)  # on the CPU
    z_hat = c * keep * torch.fft.rfft(rho)
    return torch.fft.irfft(1j * k.to(rho.dtype) * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


def _cv_double(rho, beta):
    return circle_velocity(rho.double(), beta)


def _cv_without_z(rho, beta):
    z_hat, k = _z_hat(rho, beta)
    return torch.fft.irfft(1j * k * z_hat, n=rho.shape[-1]) / beta


def _cv_no_n(rho, beta):
    z_hat, k = _z_hat(rho, beta)
    return torch.fft.irfft(1j * k * z_hat) / (beta * torch.fft.irfft(z_hat))


def _cv_full_fft(rho, beta):
    n = rho.shape[-1]
    freq = torch.fft.fftfreq(n, 1 / n, dtype=rho.dtype, device=rho.device)  # 0, 1, ..., -1
    keep = freq.abs() < n / 2  # the Nyquist frequency dropped
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    z_hat = c[freq.abs().long()] * keep * torch.fft.fft(rho)
    return torch.fft.ifft(1j * freq * z_hat).real / (beta * torch.fft.ifft(z_hat).real)


def _cv_rfftfreq(rho, beta):
    n = rho.shape[-1]
    k = torch.fft.rfftfreq(n, 1 / n, dtype=rho.dtype, device=rho.device)
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    z_hat = torch.where(k < n / 2, c * torch.fft.rfft(rho), 0)
    return torch.fft.irfft(1j * k * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


def _cv_slice_nyquist(rho, beta):
    n = rho.shape[-1]
    c = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    z_hat = c * torch.fft.rfft(rho)
    if n % 2 == 0:
        z_hat[..., n // 2] = 0
    k = torch.arange(n // 2 + 1, dtype=rho.dtype, device=rho.device)
    log_derivative = torch.fft.irfft(1j * k * z_hat, n=n) / torch.fft.irfft(z_hat, n=n)
    return log_derivative / beta


# ============================================================================ exercise 9
def _derivative(f, keep_nyquist=False):
    n = f.shape[-1]
    k = torch.arange(n // 2 + 1, device=f.device)
    keep = torch.ones_like(k) if keep_nyquist else (k <= (n - 1) // 2)
    return torch.fft.irfft(1j * (k * keep).to(f.dtype) * torch.fft.rfft(f), n=n)


def _rhs_sign(rho, beta):
    return _derivative(rho * circle_velocity(rho, beta))


def _rhs_velocity_only(rho, beta):
    return -_derivative(circle_velocity(rho, beta))


def _rhs_nyquist_velocity(rho, beta):
    return -_derivative(rho * _cv_nyquist_kept(rho, beta))


def _rhs_rho_dv(rho, beta):
    return -rho * _derivative(circle_velocity(rho, beta))


def _rhs_in_place(rho, beta):
    flux = rho.mul_(circle_velocity(rho.clone(), beta))
    return -_derivative(flux)


def _rhs_no_n(rho, beta):
    k = torch.arange(rho.shape[-1] // 2 + 1, device=rho.device)
    flux = rho * circle_velocity(rho, beta)
    return -torch.fft.irfft(1j * k.to(rho.dtype) * torch.fft.rfft(flux))


def _rhs_nyquist_in_derivative(rho, beta):
    return -_derivative(rho * circle_velocity(rho, beta), keep_nyquist=True)


def _rhs_full_fft(rho, beta):
    n = rho.shape[-1]
    freq = torch.fft.fftfreq(n, 1 / n, dtype=rho.dtype, device=rho.device)
    flux = rho * circle_velocity(rho, beta)
    return -torch.fft.ifft(1j * freq * torch.fft.fft(flux)).real


def _rhs_product_rule(rho, beta):
    v = circle_velocity(rho, beta)
    return -_derivative(rho * v)


# ============================================================================ exercise 10
def _fm_half_circle(betas, phi_end=0.05):
    return torch.stack([_merge(b, math.pi / _k_star(b), phi_end) for b in betas])


def _fm_dropped_k0(betas, phi_end=0.05):
    return torch.stack([_merge(b, 2 * math.pi / _k_star(b, -1), phi_end) for b in betas])


def _fm_no_one(betas, phi_end=0.05):
    return torch.stack([_merge(b, 2 * math.pi / _k_star(b), phi_end, one=0.0) for b in betas])


def _fm_one_cluster_moves(betas, phi_end=0.05):
    return 2 * first_merge_time(betas, phi_end)


def _fm_laplace(betas, phi_end=0.05):
    beta = torch.tensor(betas, dtype=F64)
    phi0 = 2 * math.pi / torch.tensor([float(_k_star(b)) for b in betas], dtype=F64)
    return torch.exp(beta * (1 - torch.cos(phi0))) / (2 * beta * torch.sin(phi0) ** 2)


def _fm_float32(betas, phi_end=0.05):
    return first_merge_time(betas, phi_end).float()


def _fm_list(betas, phi_end=0.05):
    return [t.item() for t in first_merge_time(betas, phi_end)]


def _fm_consumes_betas(betas, phi_end=0.05):
    times = []
    while betas:  # empties the caller's list
        beta = betas.pop(0)
        times.append(_merge(beta, 2 * math.pi / _k_star(beta), phi_end))
    return torch.stack(times)


def _fm_by_hand(betas, phi_end=0.05):
    out = torch.empty(len(betas), dtype=F64)
    for i, beta in enumerate(betas):
        phi = torch.linspace(phi_end, 2 * math.pi / _k_star(beta), 20001, dtype=F64)
        f = (1 + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        out[i] = ((f[1:] + f[:-1]) / 2 * phi.diff()).sum()
    return out


def _fm_cumulative(betas, phi_end=0.05):
    times = []
    for beta in betas:
        phi = torch.linspace(phi_end, 2 * math.pi / _k_star(beta), 20001, dtype=F64)
        f = (1 + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        times.append(torch.cumulative_trapezoid(f, phi)[-1])
    return torch.tensor(times, dtype=F64)


def _fm_sqrt_rates(betas, phi_end=0.05):
    times = []
    for beta in betas:
        k = torch.arange(0, 4 * math.ceil(math.sqrt(beta)) + 5)
        rates = MF.circle_growth_rates(beta, int(k[-1]))
        phi0 = 2 * math.pi / int(k[rates.argmax()])
        times.append(_merge(beta, phi0, phi_end))
    return torch.stack(times).to(F64)


# ============================================================================ the catalogue
MISTAKES = {
    "project_tangent": [
        ("subtracts <x, v> v (the seed slip)", _pt_seed_slip, "not <x, v> v"),
        ("returns the radial part <x, v> x", _pt_radial, "removes the radial part"),
        ("sums over every dimension", _pt_sum_all, "sums over the last dimension only"),
        (
            "no keepdim: the sum broadcasts against x",
            _pt_no_keepdim,
            "keepdim=True, shape (..., n, 1)",
        ),
        ("modifies v in place", _pt_in_place, "modified its input 'v' in place"),
        ("computes in float64", _pt_double, "should have dtype torch.float32"),
        ("creates its result on the CPU", _pt_cpu, "'meta' device"),
        ("draws from the global generator", _pt_global_rng, "global random state"),
    ],
    "attention_velocity": [
        ("subtracts <x, y> y (the seed slip)", _av_seed_slip, "the seed presentation's slip"),
        ("no projection", _av_unprojected, "project the attention output"),
        ("softmax over the queries (dim=-2)", _av_wrong_axis, "the last axis, dim=-1"),
        ("values x @ V instead of x @ V.T", _av_v_not_transposed, "x @ V.T (not x @ V)"),
        ("softmax by hand without the max", _av_naive_softmax, "overflows in float32"),
        ("forgets beta", _av_no_beta, "multiply the scores by beta"),
        ("no keepdim in the projection", _av_no_keepdim, "keepdim=True"),
    ],
    "euler_step": [
        ("steps backwards", _eu_backwards, "not x - dt v(x)"),
        ("forgets dt", _eu_no_dt, "scale the velocity by the time step"),
        ("renormalises inside the step", _eu_renormalised, "do not renormalise inside the step"),
        ("evaluates the velocity twice", _eu_twice, "evaluated the velocity 2 times"),
        ("updates x in place", _eu_in_place, "modified its input 'x' in place"),
        ("returns the increment only", _eu_increment, "x_{k+1} = x_k + dt v(x_k)"),
    ],
    "rk4_step": [
        ("full steps for k2, k3", _rk4_full_steps, "half a step ahead"),
        ("equal weights", _rk4_equal_weights, "the weights are (k1 + 2 k2 + 2 k3 + k4) / 6"),
        ("every stage from k1", _rk4_from_k1, "each stage uses the previous one"),
        ("forgets dt in the update", _rk4_no_dt, "multiply the weighted average by dt"),
        ("an Euler step", _rk4_euler, "evaluated the velocity 1 times"),
        ("five evaluations", _rk4_five_calls, "evaluated the velocity 5 times"),
    ],
    "integrate": [
        ("drops x0", _int_without_x0, "the trajectory starts with x0"),
        ("always renormalises", _int_always_renormalised, "renormalise only when renormalize=True"),
        ("never renormalises", _int_never_renormalised, "divide every particle by its norm"),
        ("dt = 1", _int_unit_step, "the step size is dt = t_max / n_steps"),
        ("one step too many", _int_one_step_too_many, "step was called"),
        ("norm over the particles (dim=0)", _int_wrong_norm_axis, "frames[0] = x0"),
        ("updates x0 in place", _int_in_place, "modified its input 'x0' in place"),
        ("a buffer created on the CPU", _int_cpu_buffer, "'meta' device"),
    ],
    "convergence_order": [
        ("a constant slope", _co_constant, "expected a slope of"),
        ("returns a tensor", _co_tensor, "expected a Python float"),
        ("log10 of dt, log of the error", _co_log10, "expected a slope of"),
        ("integrates with Euler whatever step is given", _co_step_ignored, "expected a slope of"),
        ("returns the intercept", _co_intercept, "expected a slope of"),
        ("distance moved instead of the error", _co_distance_moved, "expected a slope of"),
    ],
    "cluster_counts": [
        ("time first, then beta", _cc_transposed, "one row per beta, then time"),
        ("int32 counts", _cc_int32, "expected dtype torch.int64"),
        ("float counts", _cc_float, "expected dtype torch.int64"),
        ("ignores record_every", _cc_every_frame, "expected shape"),
        ("only the last frame", _cc_last_frame, "expected shape"),
        ("a list of tensors", _cc_list, "expected a torch.Tensor"),
    ],
    "circle_velocity": [
        ("keeps the Nyquist coefficient", _cv_nyquist_kept, "Nyquist coefficient k = N/2"),
        ("forgets to divide by beta", _cv_without_beta, "divide by beta"),
        ("differentiates with -1j * k", _cv_minus_ik, "+1j * k"),
        ("returns a complex tensor", _cv_complex, "is complex"),
        ("kernel coefficients on the CPU", _cv_cpu_coefficients, "'meta' device"),
        ("computes in float64", _cv_double, "should have dtype torch.float32"),
        ("forgets to divide by Z", _cv_without_z, "divide the derivative by Z"),
        ("irfft without n=N", _cv_no_n, "should have shape"),
    ],
    "continuity_rhs": [
        ("the sign", _rhs_sign, "the sign: d rho/dt = -d/dtheta(rho v)"),
        ("differentiates the velocity only", _rhs_velocity_only, "not the velocity alone"),
        ("a velocity with the Nyquist mode kept", _rhs_nyquist_velocity, "Nyquist coefficient"),
        ("rho times dv/dtheta", _rhs_rho_dv, "rho dv/dtheta leaves out"),
        ("forms the flux in place", _rhs_in_place, "modified its input 'rho' in place"),
        ("irfft without n=N", _rhs_no_n, "should have shape"),
    ],
    "first_merge_time": [
        ("spacing pi / k*", _fm_half_circle, "2 pi / k* apart (not pi / k*)"),
        ("drops k = 0 before the argmax", _fm_dropped_k0, "do not drop it before taking"),
        ("forgets the 1", _fm_no_one, "the 1 comes from the weight"),
        ("one cluster moving", _fm_one_cluster_moves, "twice the speed"),
        ("the large-beta approximation", _fm_laplace, "large-beta approximation"),
        ("float32", _fm_float32, "expected dtype torch.float64"),
        ("a list of floats", _fm_list, "expected a torch.Tensor"),
        ("empties betas while looping", _fm_consumes_betas, "modified its input 'betas' in place"),
    ],
}

VALID = {
    "project_tangent": [
        ("einsum", _pt_einsum),
        ("batched matmul", _pt_matmul),
        ("torch.linalg.vecdot", _pt_vecdot),
    ],
    "attention_velocity": [
        ("einsum throughout", _av_einsum),
        ("softmax by hand, max subtracted", _av_stable_by_hand),
        ("identity matrices for None, F.softmax", _av_identity_matrices),
        (
            "the solution beside a project_tangent without keepdim (labcore's is used in its place)",
            notebook(globals(), "attention_velocity", project_tangent=_pt_no_keepdim),
        ),
    ],
    "euler_step": [
        ("torch.add with alpha", _eu_alpha),
        ("in place on a clone", _eu_clone),
        ("v(x) dt + x", _eu_order),
    ],
    "rk4_step": [
        ("a Butcher tableau loop", _rk4_tableau),
        ("weights 1/6, 1/3, 1/3, 1/6", _rk4_thirds),
        ("accumulated in place on a fresh tensor", _rk4_accumulate),
    ],
    "integrate": [
        ("preallocated output", _int_preallocated),
        ("F.normalize", _int_normalize),
        ("recursive", _int_recursive),
    ],
    "convergence_order": [
        ("a numpy.float64", _co_numpy_float),
        ("torch.linalg.lstsq", _co_lstsq),
        ("closed-form least squares", _co_closed_form),
        (
            "the solution beside an integrate with one step too many and an unprojected "
            "attention_velocity (labcore's are used in their place)",
            notebook(
                globals(),
                "convergence_order",
                integrate=_int_one_step_too_many,
                attention_velocity=_av_unprojected,
            ),
        ),
    ],
    "cluster_counts": [
        ("preallocated int64", _cc_preallocated),
        ("a comprehension with a closure factory", _cc_comprehension),
        ("functools.partial", _cc_partial),
    ],
    "circle_velocity": [
        ("full complex FFT with fftfreq", _cv_full_fft),
        ("rfftfreq and torch.where", _cv_rfftfreq),
        ("Nyquist set to zero by indexing", _cv_slice_nyquist),
    ],
    "continuity_rhs": [
        ("Nyquist kept in the derivative (irfft drops it)", _rhs_nyquist_in_derivative),
        ("full complex FFT, real part", _rhs_full_fft),
        ("velocity first, then the flux", _rhs_product_rule),
        (
            "the solution beside a circle_velocity without 1/beta (labcore's is used in its place)",
            notebook(globals(), "continuity_rhs", circle_velocity=_cv_without_beta),
        ),
    ],
    "first_merge_time": [
        ("trapezoid by hand", _fm_by_hand),
        ("cumulative_trapezoid", _fm_cumulative),
        ("argmax over an explicit k range", _fm_sqrt_rates),
    ],
}
