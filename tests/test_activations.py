import csv

import torch
from torch import nn

from stages import activations, prepare, train
from stages.model import load_model


class MyNeuralNet(nn.Module):
    """The tutorial's class with named layers; its forward also returns the hidden layer (way 2)."""

    def __init__(self, hidden=8):
        super().__init__()
        self.input_to_hidden_layer = nn.Linear(2, hidden)
        self.hidden_layer_activation = nn.ReLU()
        self.hidden_to_output_layer = nn.Linear(hidden, 1)

    def forward(self, x):
        hidden = self.hidden_layer_activation(self.input_to_hidden_layer(x))
        return self.hidden_to_output_layer(hidden), hidden


def test_activations_match_relu_of_the_first_layer_and_the_tutorials_two_ways(workdir):
    prepare.main()
    train.main()
    activations.main()
    with open("artifacts/activations.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["x1", "x2", *(f"h{i}" for i in range(8))]
    assert [row[:2] for row in rows[1:]] == [["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"]]
    written = torch.tensor([[float(v) for v in row[2:]] for row in rows[1:]])

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    state = torch.load("artifacts/mymodel.pth", weights_only=True)
    expected = torch.relu(x @ state["0.weight"].T + state["0.bias"])
    assert torch.allclose(written, expected, atol=1e-6)

    net = MyNeuralNet()
    renamed = dict(zip(net.state_dict(), state.values(), strict=True))
    net.load_state_dict(renamed)
    with torch.no_grad():
        by_hand = net.hidden_layer_activation(net.input_to_hidden_layer(x))  # way 1: the layers called in order
        _, returned = net(x)  # way 2: a forward that also returns the hidden layer
        sliced = activations.hidden_activations(load_model(8, torch.device("cpu")), x)  # what the stage does
    assert torch.equal(by_hand, sliced) and torch.equal(returned, sliced)
