"""The tutorial's code as one script (its slips fixed): the baseline `make repro` is timed against.

python -m tools.tutorial      # trains, prints, saves mymodel.pth and the loss plot under build/tutorial/
"""

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim import SGD  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchsummary import summary  # noqa: E402

OUT = Path("build/tutorial")
device = "cuda" if torch.cuda.is_available() else "cpu"
x = [[1, 2], [3, 4], [5, 6], [7, 8]]
y = [[3], [7], [11], [15]]


class MyDataset(Dataset):
    def __init__(self, x, y):
        self.x = torch.tensor(x).float().to(device)
        self.y = torch.tensor(y).float().to(device)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, ix):
        return self.x[ix], self.y[ix]


torch.manual_seed(0)
dl = DataLoader(MyDataset(x, y), batch_size=2, shuffle=True)
model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
summary(model, (2,), device=device)
loss_func = nn.MSELoss()
opt = SGD(model.parameters(), lr=0.001)

loss_history = []
start = time.time()
for _ in range(50):
    for ix, iy in dl:
        opt.zero_grad()
        loss_value = loss_func(model(ix), iy)
        loss_value.backward()
        opt.step()
        loss_history.append(loss_value.item())
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
