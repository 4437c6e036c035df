"""What a rank holds (course_utils.sharding) and activation checkpointing (notebook 03). The two-process
DDP and FSDP runs are in test_pretrain.py."""

import torch

from course_utils.model import GPT, GPTConfig
from course_utils.sharding import gradient_sync, state_bytes

_CFG = GPTConfig(vocab_size=300, max_seq_len=32, n_layer=2, n_head=2, d_model=32, ffn_hidden=48)


def test_state_bytes_counts_parameters_gradients_and_both_adam_moments():
    model = GPT(_CFG)
    opt = torch.optim.AdamW(model.parameters())
    n = model.num_params() * 4  # fp32
    assert state_bytes(model, opt) == {"params": n, "grads": 0, "optimizer": 0, "total": n}
    x = torch.randint(0, 300, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    assert state_bytes(model, opt) == {"params": n, "grads": n, "optimizer": 2 * n, "total": 4 * n}
    with gradient_sync(model, sync=False):  # one process: nothing to hold back
        pass


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    plain = GPT(_CFG)
    again = GPT(_CFG)
    again.load_state_dict(plain.state_dict())
    again.activation_checkpointing = True
    x = torch.randint(0, 300, (2, 16))
    losses = []
    for model in (plain, again):
        _, loss = model(x, x)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == losses[1]
    for (name, p), q in zip(plain.named_parameters(), again.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
