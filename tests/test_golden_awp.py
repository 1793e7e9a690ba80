"""Golden steps of AT-AWP and TRADES-AWP against references written from the official AWP code.

csdongxian/AWP: AT_AWP/utils_awp.py (AdvWeightPerturb, diff_in_weights, add_into_weights),
AT_AWP/train_cifar10.py (AT-AWP's batch), trades_AWP/utils_awp.py (TradesAWP) and
trades_AWP/train_trades_cifar.py (TRADES-AWP's batch, perturb_input). Each reference restates the
script's batch with plain torch, as tests/test_golden_steps.py does for the other methods: the
attack, the proxy's step, the layer-wise scaled perturbation, the perturbed step and the restore,
in the script's order. The same weights, batch and seed go to both sides; losses, parameters and
buffers must agree to 1e-5. Each test also checks that the same reference without the weight
perturbation lands outside that tolerance, so a cat-bench step that dropped it would fail.
"""

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F

from test_golden_steps import ALPHA, EPS, STEPS, TOL, assert_same, attack_pgd, batch, cifar_f, ours_step, ref_opt, state

EPS_NORM = 1e-20


def diff_in_weights(model, proxy):
    """utils_awp.py, verbatim but for names."""
    diff_dict = OrderedDict()
    model_state_dict = model.state_dict()
    proxy_state_dict = proxy.state_dict()
    for (old_k, old_w), (new_k, new_w) in zip(model_state_dict.items(), proxy_state_dict.items()):
        if len(old_w.size()) <= 1:
            continue
        if "weight" in old_k:
            diff_w = new_w - old_w
            diff_dict[old_k] = old_w.norm() / (diff_w.norm() + EPS_NORM) * diff_w
    return diff_dict


def add_into_weights(model, diff, coeff=1.0):
    names_in_diff = diff.keys()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names_in_diff:
                param.add_(coeff * diff[name])


def at_awp_ref(model, X, y, *, gamma, proxy_lr=0.01):
    """One batch of AT_AWP/train_cifar10.py (PGD, restarts 1, l_inf; awp_gamma `gamma`, 0 = no AWP)."""
    proxy = copy.deepcopy(model)
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=proxy_lr)
    opt = ref_opt(model.parameters())
    model.train()
    delta = attack_pgd(model, X, y, EPS, ALPHA, STEPS)
    X_adv = torch.clamp(X + delta, min=0, max=1)
    model.train()
    if gamma > 0:  # calc_awp, perturb
        proxy.load_state_dict(model.state_dict())
        proxy.train()
        loss = -F.cross_entropy(proxy(X_adv), y)
        proxy_opt.zero_grad()
        loss.backward()
        proxy_opt.step()
        awp = diff_in_weights(model, proxy)
        add_into_weights(model, awp, coeff=1.0 * gamma)
    robust_output = model(X_adv)
    robust_loss = F.cross_entropy(robust_output, y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    if gamma > 0:
        add_into_weights(model, awp, coeff=-1.0 * gamma)
    model(X)  # output = model(normalize(X)), the clean train-mode forward
    return robust_loss.detach()


def perturb_input(model, x_natural, step_size, epsilon, perturb_steps):
    """train_trades_cifar.py perturb_input, l_inf."""
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1),
                               reduction="sum")
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def trades_awp_ref(model, x_natural, target, *, beta, gamma, proxy_lr=0.1):
    """One batch of train_trades_cifar.py's train() after the warm-up (gamma 0 = no AWP)."""
    proxy = copy.deepcopy(model)
    proxy_optim = torch.optim.SGD(proxy.parameters(), lr=proxy_lr)
    optimizer = ref_opt(model.parameters())
    x_adv = perturb_input(model, x_natural, ALPHA, EPS, STEPS)
    model.train()
    if gamma > 0:  # TradesAWP.calc_awp, perturb
        proxy.load_state_dict(model.state_dict())
        proxy.train()
        loss_natural = F.cross_entropy(proxy(x_natural), target)
        loss_robust = F.kl_div(F.log_softmax(proxy(x_adv), dim=1), F.softmax(proxy(x_natural), dim=1),
                               reduction="batchmean")
        loss = -1.0 * (loss_natural + beta * loss_robust)
        proxy_optim.zero_grad()
        loss.backward()
        proxy_optim.step()
        awp = diff_in_weights(model, proxy)
        add_into_weights(model, awp, coeff=1.0 * gamma)
    optimizer.zero_grad()
    logits_adv = model(x_adv)
    loss_robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(model(x_natural), dim=1),
                           reduction="batchmean")
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, target)
    loss = loss_natural + beta * loss_robust
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if gamma > 0:
        add_into_weights(model, awp, coeff=-1.0 * gamma)
    return loss.detach()


def _differs(ours, ref) -> bool:
    return any(not torch.allclose(a, b, **TOL) for a, b in zip(ours, ref))


def test_at_awp():
    """AT_AWP/train_cifar10.py defaults: awp_gamma 0.01, no warm-up, proxy SGD lr 0.01."""
    torch.manual_seed(3)
    f = cifar_f()
    f_ref, f_plain = copy.deepcopy(f), copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("at-awp", "cifar", f, None, x, y, epoch=1)
    torch.manual_seed(0)
    loss = at_awp_ref(f_ref, x, y, gamma=0.01)
    torch.testing.assert_close(losses["loss"], loss, **TOL)
    assert_same(state(f), state(f_ref))
    torch.manual_seed(0)
    at_awp_ref(f_plain, x, y, gamma=0.0)
    assert _differs(state(f), state(f_plain))  # without the perturbation this test would fail


def test_trades_awp_after_the_warm_up():
    """train_trades_cifar.py defaults: beta 6, awp_gamma 0.005, proxy SGD at --lr 0.1, AWP from epoch 10."""
    torch.manual_seed(3)
    f = cifar_f()
    f_ref, f_plain = copy.deepcopy(f), copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("trades-awp", "cifar", f, None, x, y, epoch=10)
    torch.manual_seed(0)
    loss = trades_awp_ref(f_ref, x, y, beta=6.0, gamma=0.005)
    torch.testing.assert_close(losses["loss"], loss, **TOL)
    assert_same(state(f), state(f_ref))
    torch.manual_seed(0)
    trades_awp_ref(f_plain, x, y, beta=6.0, gamma=0.0)
    assert _differs(state(f), state(f_plain))


def test_trades_awp_in_the_warm_up_is_the_plain_step():
    """Epoch 9 (1-based) is before `epoch >= args.awp_warmup` (10): no proxy step, no perturbation."""
    torch.manual_seed(3)
    f = cifar_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("trades-awp", "cifar", f, None, x, y, epoch=9)
    torch.manual_seed(0)
    loss = trades_awp_ref(f_ref, x, y, beta=6.0, gamma=0.0)
    torch.testing.assert_close(losses["loss"], loss, **TOL)
    assert_same(state(f), state(f_ref))
