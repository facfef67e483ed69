"""The exercise checks of lab 4 (labcore.checks.dynamics): they accept right answers, reject
typical mistakes with a message that names the cause, let an unfinished exercise's error through,
refuse the labcore function an exercise rebuilds, and run fast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from work import TorchWork

from labcore import dynamics as D
from labcore import mean_field as MF
from labcore.checks import CheckFailed
from labcore.checks import dynamics as checks

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids synchronisation costs on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ answers written from the lab
def project_tangent(x, v):
    return v - (x * v).sum(-1, keepdim=True) * x


def attention_velocity(x, beta, Q=None, K=None, V=None):
    q = x if Q is None else x @ Q.T
    k = x if K is None else x @ K.T
    v = x if V is None else x @ V.T
    weights = torch.softmax(beta * q @ k.transpose(-2, -1), dim=-1)  # (..., n, n)
    return project_tangent(x, weights @ v)


def euler_step(velocity, x, dt):
    return x + dt * velocity(x)


def rk4_step(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + dt / 2 * k1)
    k3 = velocity(x + dt / 2 * k2)
    k4 = velocity(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


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


def convergence_order(step, dts, t_max=2.0, phi0=1.5):
    x0 = D.from_angles(torch.tensor([0.0, phi0], dtype=torch.float64))
    errors = []
    for dt in dts:
        x = integrate(lambda y: attention_velocity(y, 0.0), x0, t_max, round(t_max / dt), step)[-1]
        gap = torch.remainder(D.to_angles(x[1]) - D.to_angles(x[0]), 2 * math.pi).item()
        errors.append(abs(gap - two_particle_gap(phi0, t_max)))
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def cluster_counts(x0, betas, t_max, dt, tol, record_every=1):
    out = []
    for beta in betas:
        traj = D.simulate(
            x0,
            t_max,
            dt,
            lambda x, b=beta: D.attention_velocity(x, b),
            record_every=record_every,
            progress=False,
        )
        out.append(D.count_clusters(traj, tol))
    return torch.stack(out)


def _nyquist_free_ik(n, dtype, device):
    k = torch.arange(n // 2 + 1, device=device)
    return 1j * (k * (k <= (n - 1) // 2)).to(dtype)


def circle_velocity(rho, beta):
    n = rho.shape[-1]
    kern = MF.circle_kernel_coefficients(beta, n // 2, dtype=rho.dtype, device=rho.device)
    ik = _nyquist_free_ik(n, rho.dtype, rho.device)
    z_hat = kern * (ik != 0) * torch.fft.rfft(rho)
    z_hat[..., 0] = kern[0] * torch.fft.rfft(rho)[..., 0]
    return torch.fft.irfft(ik * z_hat, n=n) / (beta * torch.fft.irfft(z_hat, n=n))


def continuity_rhs(rho, beta):
    n = rho.shape[-1]
    ik = _nyquist_free_ik(n, rho.dtype, rho.device)
    return -torch.fft.irfft(ik * torch.fft.rfft(rho * circle_velocity(rho, beta)), n=n)


def first_merge_time(betas, phi_end=0.05):
    times = []
    for beta in betas:
        k_max = 4 * math.ceil(math.sqrt(beta)) + 4
        k_star = int(MF.circle_growth_rates(beta, k_max).argmax())
        phi = torch.linspace(phi_end, 2 * math.pi / k_star, 20001, dtype=torch.float64)
        f = (1 + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        times.append(torch.trapezoid(f, phi))
    return torch.stack(times)


def _first_merge_time_sqrt(betas, phi_end=0.05):
    # a valid alternative: k* = round(sqrt(2 beta)) is the argmax for every beta in [4, 400], and
    # a finer trapezoidal rule agrees to well within the tolerance
    out = []
    for beta in betas:
        phi = torch.linspace(phi_end, 2 * math.pi / round(math.sqrt(2 * beta)), 100001, dtype=F64)
        f = (1 + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        out.append(torch.trapezoid(f, phi))
    return torch.stack(out)


CHECKS_AND_ANSWERS = [
    (checks.check_project_tangent, project_tangent),
    (checks.check_attention_velocity, attention_velocity),
    (checks.check_euler_step, euler_step),
    (checks.check_rk4_step, rk4_step),
    (checks.check_integrate, integrate),
    (checks.check_convergence_order, convergence_order),
    (checks.check_cluster_counts, cluster_counts),
    (checks.check_circle_velocity, circle_velocity),
    (checks.check_continuity_rhs, continuity_rhs),
    (checks.check_first_merge_time, first_merge_time),
]


@pytest.mark.parametrize(
    ("check", "answer"), CHECKS_AND_ANSWERS, ids=[c.__name__ for c, _ in CHECKS_AND_ANSWERS]
)
def test_checks_accept_right_answers_with_little_work(check, answer, capsys):
    with TorchWork() as work:
        check(answer)
    out = capsys.readouterr().out
    assert out.startswith("\u2714 ") and out.count("\n") == 1, out
    assert check.__name__.removeprefix("check_") in out
    work.assert_within(check.__name__)


def test_exercise_list_matches_the_module():
    assert {c.__name__ for c, _ in CHECKS_AND_ANSWERS} == {
        name for name in checks.__all__ if name.startswith("check_")
    }


# ------------------------------------------------------------------ typical mistakes
def _seed_projection_velocity(x, beta, Q=None, K=None, V=None):
    y = torch.softmax(beta * x @ x.transpose(-2, -1), dim=-1) @ x
    return y - (x * y).sum(-1, keepdim=True) * y


def _naive_softmax_velocity(x, beta, Q=None, K=None, V=None):
    q = x if Q is None else x @ Q.T
    k = x if K is None else x @ K.T
    v = x if V is None else x @ V.T
    e = torch.exp(beta * q @ k.transpose(-2, -1))
    return project_tangent(x, e / e.sum(-1, keepdim=True) @ v)


def _rk4_full_steps(velocity, x, dt):
    k1 = velocity(x)
    k2 = velocity(x + dt * k1)
    k3 = velocity(x + dt * k2)
    k4 = velocity(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _integrate_without_x0(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max, n_steps, step, renormalize)[1:]


def _integrate_always_renormalised(velocity, x0, t_max, n_steps, step, renormalize=True):
    return integrate(velocity, x0, t_max, n_steps, step, True)


def _transposed_counts(x0, betas, t_max, dt, tol, record_every=1):
    return cluster_counts(x0, betas, t_max, dt, tol, record_every).transpose(0, 1)


def _order_without_log(step, dts, t_max=2.0, phi0=1.5):
    return 1.0  # a constant, whatever the method: right for Euler only


def _merge_with_spacing(betas, phi_end, circle, shift=0, one=1.0):
    out = []
    for beta in betas:
        k_star = int(MF.circle_growth_rates(beta, 40).argmax()) + shift
        phi = torch.linspace(phi_end, circle / k_star, 20001, dtype=F64)
        f = (one + torch.exp(beta * (1 - torch.cos(phi)))) / (2 * torch.sin(phi))
        out.append(torch.trapezoid(f, phi))
    return torch.stack(out)


def _first_merge_laplace(betas, phi_end=0.05):
    beta = torch.tensor(betas, dtype=F64)
    phi0 = 2 * math.pi / torch.tensor([float(round(math.sqrt(2 * b))) for b in betas], dtype=F64)
    return torch.exp(beta * (1 - torch.cos(phi0))) / (2 * beta * torch.sin(phi0) ** 2)


def test_first_merge_time_accepts_a_valid_alternative(capsys):
    checks.check_first_merge_time(_first_merge_time_sqrt)
    assert capsys.readouterr().out.startswith("\u2714 first_merge_time")


@pytest.mark.parametrize(
    ("check", "wrong", "message"),
    [
        (
            checks.check_project_tangent,
            lambda x, v: v - (x * v).sum(-1, keepdim=True) * v,
            r"not <x, v> v: the seed presentation",
        ),
        (
            checks.check_project_tangent,
            lambda x, v: v - (x * v).sum() * x,
            r"sums over the last dimension only",
        ),
        (
            checks.check_project_tangent,
            lambda x, v: project_tangent(x.mul_(1.0), v.add_(1.0)),
            "modified its input 'v' in place",
        ),
        (
            checks.check_project_tangent,
            lambda x, v: D.project_tangent(x, v),
            "do not call labcore.dynamics.project_tangent",
        ),
        (
            checks.check_attention_velocity,
            _seed_projection_velocity,
            r"(?s)worked example.*\(e, 1\) / \(1 \+ e\)\^2.*by hand",
        ),
        (
            checks.check_attention_velocity,
            lambda x, beta, Q=None, K=None, V=None: torch.softmax(beta * x @ x.mT, -1) @ x,
            "project the attention output onto the tangent space",
        ),
        (
            checks.check_attention_velocity,
            lambda x, beta, Q=None, K=None, V=None: project_tangent(
                x, torch.softmax(beta * x @ x.mT, dim=-2) @ x
            ),
            r"last axis, dim=-1",
        ),
        (
            checks.check_attention_velocity,
            lambda x, beta, Q=None, K=None, V=None: (
                attention_velocity(x, beta, Q, K, V)
                if Q is None
                else attention_velocity(x, beta, Q, K, V.T)
            ),
            r"x @ V.T \(not x @ V\)",
        ),
        (checks.check_attention_velocity, _naive_softmax_velocity, r"(?s)beta = 200.*overflows"),
        (
            checks.check_attention_velocity,
            lambda x, beta, Q=None, K=None, V=None: D.attention_velocity(x, beta, Q, K, V),
            "do not call labcore.dynamics.attention_velocity",
        ),
        (checks.check_euler_step, lambda v, x, dt: x - dt * v(x), "not x - dt v"),
        (
            checks.check_euler_step,
            lambda v, x, dt: x + dt * v(x) + 0 * v(x),
            "evaluated the velocity 2 times",
        ),
        (checks.check_rk4_step, _rk4_full_steps, "half a step ahead"),
        (
            checks.check_rk4_step,
            lambda v, x, dt: euler_step(v, x, dt),
            "evaluated the velocity 1 times",
        ),
        (checks.check_integrate, _integrate_without_x0, "step was called|starts with x0"),
        (checks.check_integrate, _integrate_always_renormalised, "only when renormalize=True"),
        (
            checks.check_integrate,
            lambda v, x0, t_max, n, step, renormalize=True: D.simulate(x0, t_max, t_max / n, v),
            "do not call labcore.dynamics.simulate",
        ),
        (checks.check_convergence_order, _order_without_log, r"\[RK4.*expected a slope of 4"),
        (checks.check_cluster_counts, _transposed_counts, r"\(len\(betas\), T, \*batch\)"),
        (
            checks.check_circle_velocity,
            lambda rho, beta: beta * circle_velocity(rho, beta),
            "divide by beta",
        ),
        (checks.check_circle_velocity, lambda rho, beta: -circle_velocity(rho, beta), r"\+1j \* k"),
        (checks.check_circle_velocity, lambda rho, beta: torch.fft.rfft(rho), "complex"),
        (
            checks.check_circle_velocity,
            lambda rho, beta: MF.circle_velocity(rho, beta),
            "do not call labcore.mean_field.circle_velocity",
        ),
        (checks.check_continuity_rhs, lambda rho, beta: -continuity_rhs(rho, beta), "the sign"),
        (
            checks.check_continuity_rhs,
            lambda rho, beta: (
                continuity_rhs(torch.ones_like(rho), beta)
                - torch.fft.irfft(
                    _nyquist_free_ik(rho.shape[-1], rho.dtype, rho.device)
                    * torch.fft.rfft(circle_velocity(rho, beta)),
                    n=rho.shape[-1],
                )
            ),
            "differentiate the flux",
        ),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: _merge_with_spacing(betas, phi_end, math.pi),
            r"(?s)\[betas = \[16, 36, 100\].*expected:.*got:.*2 pi / k\* apart \(not pi / k\*\)",
        ),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: _merge_with_spacing(betas, phi_end, 2 * math.pi, shift=-1),
            "do not drop it before taking the argmax",
        ),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: 2 * first_merge_time(betas, phi_end),
            "twice the speed",
        ),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: _merge_with_spacing(betas, phi_end, 2 * math.pi, one=0.0),
            "the 1 comes from the weight",
        ),
        (checks.check_first_merge_time, _first_merge_laplace, "large-beta approximation"),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: first_merge_time(betas, phi_end).float(),
            "expected dtype torch.float64",
        ),
        (
            checks.check_first_merge_time,
            lambda betas, phi_end=0.05: D.two_cluster_merge_time(
                torch.tensor(betas, dtype=F64), 1.0, phi_end
            ),
            "do not call labcore.dynamics.two_cluster_merge_time",
        ),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)


def test_a_failing_answer_reports_input_expected_and_got():
    with pytest.raises(CheckFailed) as info:
        checks.check_project_tangent(lambda x, v: v)
    text = str(info.value)
    assert "[one point of the circle" in text and "expected:" in text and "got:" in text


def test_student_errors_become_feedback():
    with pytest.raises(CheckFailed, match=r"your function raised ZeroDivisionError"):
        checks.check_euler_step(lambda v, x, dt: 1 / 0)


@pytest.mark.parametrize(
    ("check", "_"), CHECKS_AND_ANSWERS, ids=[c.__name__ for c, _ in CHECKS_AND_ANSWERS]
)
def test_an_unfinished_exercise_raises_not_implemented_error(check, _):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check(stub)


def test_checks_leave_rng_and_default_dtype_alone():
    """Every check, run with a right answer, leaves the global RNG and the default dtype as they
    were (the checks draw from local generators only)."""
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    for check, answer in CHECKS_AND_ANSWERS:
        check(answer)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_default_dtype() == dtype


def test_shape_errors_are_explained():
    """``project_tangent`` without keepdim: the broadcasting error is caught and explained."""
    with pytest.raises(CheckFailed) as info:
        checks.check_project_tangent(lambda x, v: v - (x * v).sum(-1) * x)
    text = str(info.value)
    assert "inputs: x (8, 3), v (8, 3)" in text and "keepdim=True" in text


@pytest.mark.parametrize("check", [checks.check_circle_velocity, checks.check_continuity_rhs])
def test_the_nyquist_mode_must_be_dropped(check):
    """Keeping the Nyquist coefficient is off by ~1e-5 to 1e-4 on rough data (even grid)."""
    velocity = checks._velocity_with_nyquist
    wrong = (
        velocity
        if check is checks.check_circle_velocity
        else lambda rho, beta: -checks._spectral_derivative(rho * velocity(rho, beta))
    )
    with pytest.raises(CheckFailed, match=r"(?s)rough data.*Nyquist coefficient k = N/2"):
        check(wrong)


def test_a_result_created_on_the_cpu_is_caught_on_meta_tensors():
    def cpu_only(x, v):
        out = torch.zeros(x.shape, dtype=x.dtype)  # ignores x.device
        return out + v - (x * v).sum(-1, keepdim=True) * x

    with pytest.raises(CheckFailed, match="'meta' device"):
        checks.check_project_tangent(cpu_only)
