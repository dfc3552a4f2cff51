"""The tutorial's code as one script (its slips fixed): the baseline `make repro` is timed against.

python -m tools.tutorial      # trains, prints, saves mymodel.pth and the loss plot under build/tutorial/

tools/bench.py imports its Dataset and its training loop, so the benchmarks time the tutorial's own code.
"""

import time
from pathlib import Path

import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader, Dataset
from torchsummary import summary

OUT = Path("build/tutorial")


class MyDataset(Dataset):
    def __init__(self, x, y, device):
        self.x = torch.as_tensor(x, dtype=torch.float32, device=device)
        self.y = torch.as_tensor(y, dtype=torch.float32, device=device)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, ix):
        return self.x[ix], self.y[ix]


def train(model, dl, epochs=50, lr=0.001):
    """The tutorial's loop: per batch zero_grad, forward, loss, backward, step; returns the loss history."""
    loss_func = nn.MSELoss()
    opt = SGD(model.parameters(), lr=lr)
    loss_history = []
    for _ in range(epochs):
        for ix, iy in dl:
            opt.zero_grad()
            loss_value = loss_func(model(ix), iy)
            loss_value.backward()
            opt.step()
            loss_history.append(loss_value.item())
    return loss_history


def main():
    import matplotlib

    matplotlib.use("Agg")  # a file, not a window
    import matplotlib.pyplot as plt

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = [[1, 2], [3, 4], [5, 6], [7, 8]]
    y = [[3], [7], [11], [15]]

    torch.manual_seed(0)
    dl = DataLoader(MyDataset(x, y, device), batch_size=2, shuffle=True)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    summary(model, (2,), device=device)
    start = time.time()
    loss_history = train(model, dl)
    print(time.time() - start)

    val = torch.tensor([[8, 9], [10, 11], [1.5, 2.5]]).float().to(device)
    print(model(val))
    print(model[1](model[0](torch.tensor(x).float().to(device))))  # the hidden layer's activations

    OUT.mkdir(parents=True, exist_ok=True)
    plt.plot(loss_history)
    plt.title("Loss Variation over increasing epochs")
    plt.xlabel("epochs")
    plt.ylabel("loss value")
    plt.savefig(OUT / "loss.png")
    torch.save(model.state_dict(), OUT / "mymodel.pth")
    fresh = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    fresh.load_state_dict(torch.load(OUT / "mymodel.pth", weights_only=True))
    print(fresh(val))


if __name__ == "__main__":
    main()
