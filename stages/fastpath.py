"""Two ways the train stage goes faster without changing a bit of the result.

- gather_rows: an epoch's shuffled copy of the data, taken in one gather.
- GraphedStep: on CUDA, the whole training step recorded once as a CUDA graph and replayed.
"""

import torch


def gather_rows(t, order):
    """The rows of `t` in `order`, bit for bit what t.index_select(0, order) gives. A row of two float32 moves as
    one int64: a 1-D gather, which the CPU does much faster than a gather of 2-wide rows (docs/performance.md)."""
    if t.dtype == torch.float32 and t.shape[1:] == (2,) and t.stride() == (2, 1) and t.storage_offset() % 2 == 0:
        return t.view(torch.int64).view(-1).index_select(0, order).view(torch.float32).view(-1, 2)
    return t.index_select(0, order)


class GraphedStep:
    """A training step recorded once as a CUDA graph and replayed: a few kernel launches a step instead of dozens.

    PyTorch's whole-network capture recipe (docs: CUDA semantics, CUDA Graphs): warm up on a side stream,
    capture one step, then copy each batch into the captured input tensors and replay. The warm-up steps
    move the weights, so they are put back before training starts (plain SGD keeps no other state, and its
    lr is recorded into the graph: a momentum or an lr schedule would need more); a batch of another size
    (an epoch's last, smaller one) runs eagerly.
    """

    def __init__(self, step, model, xb, yb):
        self.step = step  # step(xb, yb) -> loss: stages.train.train_step with its model, optimizer and loss
        params = list(model.parameters())
        initial = [p.detach().clone() for p in params]
        self.x, self.y = xb.clone(), yb.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step(self.x, self.y)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for param, value in zip(params, initial, strict=True):
                param.copy_(value)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.step(self.x, self.y)
        self.grads = [p.grad for p in params]  # the captured gradient buffers: alive as long as the graph

    def __call__(self, xb, yb):
        if xb.shape != self.x.shape:
            return self.step(xb, yb)
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()
        return self.loss.clone()
