"""Golden steps: one training step of every method against a reference written from its official code.

Each reference below restates, with plain torch and no cat-bench loss or attack, what the official
script does in one batch: its attack (start, loss and reduction, projection, train or eval mode,
its extra forwards), the order of its forwards (which decides dropout masks and BatchNorm's
running statistics), its loss with the script's reductions, constants and detaches, and which
network steps when. The same initial weights, batch and RNG seed go to both sides; the losses
must agree to 1e-5 and every parameter and buffer (BatchNorm running statistics included) after
the optimiser step to 1e-5. A changed reduction, detach, order or constant in cat-bench fails.

Scripts: locuslab/robust_overfitting train_cifar.py (AT), MadryLab/mnist_challenge train.py +
pgd_attack.py (AT on MNIST), yaodongyu/TRADES trades.py, YisenWang/MART mart.py,
zjfheart/Friendly-Adversarial-Training earlystop.py + FAT_for_TRADES.py, and
TienjinHuang/Calibrated-adversarial-training Codes/Train_CIFAR10.py, Codes/Train_MNIST.py (CAT).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cat_bench.methods import TrainAttack, get_method, resolve_hparams

B = 8  # a power of two: /B is exact in float, so a reduction's scale cannot flip a sign
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 3
TOL = dict(rtol=1e-5, atol=1e-5)


def cifar_f(dropout: bool = False) -> nn.Module:
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
              nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers, nn.Linear(4 * 4 * 4, 10))


def cifar_g() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2),
                         nn.Conv2d(4, 3, 3, padding=1), nn.Sigmoid())


def mnist_f() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def mnist_g() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())


def batch(channels: int, seed: int = 2):
    """Images with a quarter of their pixels at exactly 0 or 1, where clipping and unclipped starts matter.

    Seed 2 gives no sign tie: with seeds 1, 4 and 7 one pixel's attack gradient in the TRADES or
    FAT test is within float rounding of 0 (1e-11 against a median of 1e-7), its sign differs
    between two correct implementations and that pixel's step flips.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(B, channels, 8, 8, generator=gen)
    edge = torch.rand(x.shape, generator=gen)
    x = torch.where(edge < 0.15, torch.zeros_like(x), torch.where(edge > 0.9, torch.ones_like(x), x))
    return x, torch.randint(0, 10, (B,), generator=gen)


def state(*nets) -> list[torch.Tensor]:
    return [t.detach().clone() for net in nets for t in (*net.parameters(), *net.buffers())]


def assert_same(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)


def ours_step(name: str, family: str, f, g, x, y, *, epoch=1, optim="sgd", lr=0.1, overrides=None,
              attack=(EPS, ALPHA, STEPS), clip=True, seed=0):
    """One cat-bench `update` with its optimisers; returns the losses."""
    cls = get_method(name)
    hparams = resolve_hparams(name, family, overrides or {})
    method = cls(f, g, hparams, TrainAttack(*attack, clip=clip))
    opt = (lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=5e-4)) if optim == "sgd" else \
        (lambda p: torch.optim.Adam(p, lr=lr))
    optimizers = {k: opt(m.parameters()) for k, m in method.modules().items()}
    for m in method.modules().values():
        m.train()
    torch.manual_seed(seed)
    return method.update(x, y, optimizers, epoch)


def ref_opt(params, optim="sgd", lr=0.1):
    if optim == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(params, lr=lr)


def cwloss(output, target, confidence):
    """cwloss of CAT's (and FAT's) code: summed C&W margin."""
    onehot = torch.zeros(target.size() + (output.shape[1],))
    onehot.scatter_(1, target.unsqueeze(1), 1.0)
    real = (onehot * output).sum(1)
    other = ((1.0 - onehot) * output - onehot * 10000.0).max(1)[0]
    return torch.sum(-torch.clamp(real - other + confidence, min=0.0))


def attack_pgd(model, X, y, epsilon, alpha, iters, loss="ce", kappa=50.0):
    """attack_pgd of train_cifar.py / Train_CIFAR10.py with restarts=1 (attack_pgd_cw for loss="cw")."""
    delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
    delta = torch.max(torch.min(delta, 1 - X), 0 - X)
    delta.requires_grad = True
    for _ in range(iters):
        output = model(X + delta)
        lossv = F.cross_entropy(output, y) if loss == "ce" else cwloss(output, y, kappa)
        lossv.backward()
        d = torch.clamp(delta + alpha * torch.sign(delta.grad.detach()), min=-epsilon, max=epsilon)
        delta.data = torch.max(torch.min(d, 1 - X), 0 - X)
        delta.grad.zero_()
    F.cross_entropy(model(X + delta), y, reduction="none")  # the restart bookkeeping forward (train mode)
    return delta.detach()


# ---------------------------------------------------------------- natural, AT


def test_natural():
    torch.manual_seed(3)
    f = cifar_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("natural", "cifar", f, None, x, y)
    opt = ref_opt(f_ref.parameters())
    loss = F.cross_entropy(f_ref(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(losses["loss"], loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


def test_at_rice_cifar():
    """train_cifar.py: PGD (train mode), f(x_adv) CE step, then a clean train-mode forward."""
    torch.manual_seed(3)
    f = cifar_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("at", "cifar", f, None, x, y)
    torch.manual_seed(0)
    f_ref.train()
    opt = ref_opt(f_ref.parameters())
    delta = attack_pgd(f_ref, x, y, EPS, ALPHA, STEPS)
    robust_loss = F.cross_entropy(f_ref(torch.clamp(x + delta, 0, 1)), y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    f_ref(x)
    torch.testing.assert_close(losses["loss"], robust_loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


def test_at_madry_mnist():
    """mnist_challenge: x + U(-eps, eps) clipped to [0,1], PGD on summed xent, Adam on summed xent."""
    torch.manual_seed(3)
    f = mnist_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(1)
    eps, a, k = 0.3, 0.01, 5
    losses = ours_step("at", "mnist", f, None, x, y, optim="adam", lr=1e-4, attack=(eps, a, k))
    torch.manual_seed(0)
    x_adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0, 1)
    for _ in range(k):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(f_ref(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.clamp(torch.clamp(x_adv.detach() + a * grad.sign(), x - eps, x + eps), 0, 1)
    opt = ref_opt(f_ref.parameters(), "adam", 1e-4)
    loss = F.cross_entropy(f_ref(x_adv), y, reduction="sum")
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(losses["loss"], loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


# ---------------------------------------------------------------- TRADES, MART, FAT


def trades_ref(model, x_natural, y, beta, step_size, epsilon, perturb_steps):
    """trades.py's trades_loss (l_inf), returning the loss before backward."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x_natural)) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                         F.softmax(model(x_natural), dim=1))
    return loss_natural + beta * loss_robust


@pytest.mark.parametrize("dropout", [False, True], ids=["bn", "bn+dropout"])
def test_trades(dropout):
    """trades.py: unprojected gaussian start, KL attack in eval mode, forwards x, x_adv, x in train mode."""
    torch.manual_seed(3)
    f = cifar_f(dropout)
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("trades", "cifar", f, None, x, y, attack=(0.031, 0.007, STEPS))
    torch.manual_seed(0)
    opt = ref_opt(f_ref.parameters())
    loss = trades_ref(f_ref, x, y, 6.0, 0.007, 0.031, STEPS)
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(losses["loss"], loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


def mart_ref(model, x_natural, y, beta, step_size, epsilon, perturb_steps):
    """mart.py's mart_loss (l_inf), returning the loss before backward."""
    kl = nn.KLDivLoss(reduction="none")
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y), [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon), 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    logits = model(x_natural)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / len(x_natural)) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
    return loss_adv + float(beta) * loss_robust


def test_mart():
    torch.manual_seed(3)
    f = cifar_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("mart", "cifar", f, None, x, y, attack=(0.031, 0.007, STEPS))
    torch.manual_seed(0)
    opt = ref_opt(f_ref.parameters())
    loss = mart_ref(f_ref, x, y, 6.0, 0.007, 0.031, STEPS)
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(losses["loss"], loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


def earlystop_ref(model, data, target, step_size, epsilon, perturb_steps, tau):
    """earlystop.py (KL loss, normal random init), with its per-example bookkeeping and compaction."""
    model.eval()
    K, control = perturb_steps, torch.ones(len(target)) * tau
    out_adv, out_nat, out_y = [], [], []
    iter_adv = torch.clamp(data.detach() + 0.001 * torch.randn(data.shape), 0.0, 1.0)
    iter_clean, iter_target = data.detach(), target.detach()
    clean_out = model(data)
    while K > 0:
        iter_adv.requires_grad_()
        output = model(iter_adv)
        pred = output.max(1)[1]
        output_index, iter_index = [], []
        for idx in range(len(pred)):
            if pred[idx] != iter_target[idx]:
                if control[idx] == 0:
                    output_index.append(idx)
                else:
                    control[idx] -= 1
                    iter_index.append(idx)
            else:
                iter_index.append(idx)
        if output_index:
            out_adv.append(iter_adv[output_index].detach())
            out_nat.append(iter_clean[output_index])
            out_y.append(iter_target[output_index])
        loss_adv = nn.KLDivLoss(reduction="sum")(F.log_softmax(output, dim=1), F.softmax(clean_out, dim=1))
        grad = torch.autograd.grad(loss_adv, iter_adv, retain_graph=True)[0]
        if not iter_index:
            break
        control, iter_adv, iter_clean = control[iter_index], iter_adv[iter_index], iter_clean[iter_index]
        iter_target, clean_out, grad = iter_target[iter_index], clean_out[iter_index], grad[iter_index]
        iter_adv = iter_adv.detach() + step_size * grad.sign()
        iter_adv = torch.clamp(torch.min(torch.max(iter_adv, iter_clean - epsilon), iter_clean + epsilon), 0, 1)
        K -= 1
    else:
        out_adv.append(iter_adv.detach())
        out_nat.append(iter_clean)
        out_y.append(iter_target)
    return torch.cat(out_adv), torch.cat(out_y), torch.cat(out_nat)


@pytest.mark.parametrize("epoch", [10, 40, 60, 80])  # tau 0, 1, 2, 3
def test_fat(epoch):
    """earlystop.py + FAT_for_TRADES.py: friendly examples, then TRADES_loss on one natural forward."""
    torch.manual_seed(3)
    f = cifar_f()
    f_ref = copy.deepcopy(f)
    x, y = batch(3)
    losses = ours_step("fat", "cifar", f, None, x, y, epoch=epoch, attack=(0.031, 0.007, 10))
    torch.manual_seed(0)
    tau = sum(epoch > e for e in (30, 50, 70))
    adv, target, nat = earlystop_ref(f_ref, x, y, 0.007, 0.031, 10, tau)
    f_ref.train()
    opt = ref_opt(f_ref.parameters())
    natural_logits, adv_logits = f_ref(nat), f_ref(adv)
    loss = F.cross_entropy(natural_logits, target) + 6.0 * (1.0 / len(target)) * nn.KLDivLoss(reduction="sum")(
        F.log_softmax(adv_logits, dim=1), F.softmax(natural_logits, dim=1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.testing.assert_close(losses["loss"], loss.detach(), **TOL)
    assert_same(state(f), state(f_ref))


# ---------------------------------------------------------------- CAT


def cat_cifar_ref(model, img_mask, X, y, *, attackloss, beta2, beta1, ablation="none"):
    """One batch of Train_CIFAR10.py's loop (clipped, train mode); A1/A2 swap in M = 1 / plain CE."""
    kl = nn.KLDivLoss(reduction="sum")
    model.train()
    img_mask.train()
    opt, opt1 = ref_opt(model.parameters()), ref_opt(img_mask.parameters())
    batch_size = X.shape[0]
    delta = attack_pgd(model, X, y, EPS, ALPHA, STEPS, loss=attackloss)
    mask_input = X + delta
    mask = img_mask(mask_input) if ablation != "A1" else torch.ones_like(X)
    delta_new = delta * mask
    robust_output = model(torch.clamp(X + delta_new, min=0, max=1))
    output_nat = model(X)
    true_props = torch.gather(F.softmax(output_nat, dim=1), 1, (y.unsqueeze(1)).long()).squeeze()
    loss_rob1 = (1.0 / batch_size) * kl(F.log_softmax(robust_output, dim=1), F.softmax(output_nat, dim=1))
    weight = (1.0000001 - true_props) if ablation == "none" else 1.0
    robust_loss = beta2 * loss_rob1 + (1.0 / batch_size) * torch.sum(
        nn.CrossEntropyLoss(reduction="none")(output_nat, y) * weight)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    loss_mask = None
    if ablation != "A1":
        mask = img_mask(mask_input)
        delta_new = delta * mask
        out_adv = model(torch.clamp(X + delta, min=0, max=1))
        out_mask_adv = model(torch.clamp(X + delta_new, min=0, max=1))
        temp_loss = (1.0 / batch_size) * kl(F.log_softmax(out_mask_adv, dim=1), F.softmax(out_adv, dim=1))
        loss_mask = temp_loss + beta1 * nn.CrossEntropyLoss()(out_mask_adv, y)
        opt1.zero_grad()
        loss_mask.backward()
        opt1.step()
    model(X)  # the logging forward after both steps
    return robust_loss, loss_mask


@pytest.mark.parametrize("name,attackloss,ablation", [
    ("cat-cent", "ce", "none"), ("cat-cw", "cw", "none"), ("cat-cent", "ce", "A1"), ("cat-cent", "ce", "A2")])
def test_cat_cifar(name, attackloss, ablation):
    torch.manual_seed(3)
    f, g = cifar_f(), cifar_g()
    f_ref, g_ref = copy.deepcopy(f), copy.deepcopy(g)
    x, y = batch(3)
    losses = ours_step(name, "cifar", f, g, x, y, overrides={"ablation": ablation})
    torch.manual_seed(0)
    loss_f, loss_g = cat_cifar_ref(f_ref, g_ref, x, y, attackloss=attackloss, beta2=5.0, beta1=0.05, ablation=ablation)
    torch.testing.assert_close(losses["loss_f"], loss_f.detach(), **TOL)
    if ablation == "A1":
        assert "loss_g" not in losses
        assert_same(state(f, g), state(f_ref, g_ref))  # g untouched on both sides
    else:
        torch.testing.assert_close(losses["loss_g"], loss_g.detach(), **TOL)
        assert_same(state(f, g), state(f_ref, g_ref))


def cat_mnist_ref(model, img_mask, X, y, *, attacktrain, epsilon):
    """One batch of Train_MNIST.py's epoch_adversarial (training branch): no clip anywhere, Adam 1e-3."""
    opt, opt1 = ref_opt(model.parameters(), "adam", 1e-3), ref_opt(img_mask.parameters(), "adam", 1e-3)
    kl = nn.KLDivLoss(reduction="sum")
    delta = torch.rand_like(X, requires_grad=True)
    delta.data = delta.data * 2 * 0.1 - 0.1
    for _ in range(STEPS):
        yp = model(X + delta)
        lossv = nn.CrossEntropyLoss()(yp, y) if attacktrain == "cent" else cwloss(yp, y, 150)
        lossv.backward()
        delta.data = (delta + epsilon / 20 * delta.grad.detach().sign()).clamp(-epsilon, epsilon)
        delta.grad.zero_()
    delta = delta.detach()
    batch_size = X.shape[0]
    input_mask = X + delta
    mask = img_mask(input_mask)
    delta_new = delta * mask
    yp_nat = model(X)
    true_probs = torch.gather(F.softmax(yp_nat, dim=1), 1, (y.unsqueeze(1)).long()).squeeze()
    yp = model(X + delta_new)
    loss_robust = (1.0 / batch_size) * kl(F.log_softmax(yp, dim=1), F.softmax(yp_nat, dim=1))
    loss = loss_robust + (1.0 / batch_size) * torch.sum(
        nn.CrossEntropyLoss(reduction="none")(yp_nat, y) * (1.0000001 - true_probs))
    opt.zero_grad()
    loss.backward()
    opt.step()
    mask = img_mask(input_mask)
    delta_new = delta * mask
    yp_adv = model(X + delta)
    yp = model(X + delta_new)
    temp_loss = (1.0 / batch_size) * kl(F.log_softmax(yp, dim=1), F.softmax(yp_adv, dim=1))
    loss_mask = temp_loss + 0.3 * nn.CrossEntropyLoss()(yp, y)
    opt1.zero_grad()
    loss_mask.backward()
    opt1.step()
    return loss, loss_mask


@pytest.mark.parametrize("name,attacktrain", [("cat-cent", "cent"), ("cat-cw", "cw")])
def test_cat_mnist_paper_protocol(name, attacktrain):
    """Train_MNIST.py at eps 0.4: the calibrated and adversarial inputs leave [0,1], as in the code."""
    torch.manual_seed(3)
    f, g = mnist_f(), mnist_g()
    f_ref, g_ref = copy.deepcopy(f), copy.deepcopy(g)
    x, y = batch(1)
    eps = 0.4
    losses = ours_step(name, "mnist", f, g, x, y, optim="adam", lr=1e-3, attack=(eps, eps / 20, STEPS), clip=False)
    torch.manual_seed(0)
    loss_f, loss_g = cat_mnist_ref(f_ref, g_ref, x, y, attacktrain=attacktrain, epsilon=eps)
    torch.testing.assert_close(losses["loss_f"], loss_f.detach(), **TOL)
    torch.testing.assert_close(losses["loss_g"], loss_g.detach(), **TOL)
    assert_same(state(f, g), state(f_ref, g_ref))
