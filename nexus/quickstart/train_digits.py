"""Train a small classifier on scikit-learn's handwritten digits (8x8 images) and export it with torch.export."""

import json

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

torch.manual_seed(0)
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)  # pixels 0..16 -> 0..1
x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.2, random_state=0)


class DigitClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


model = DigitClassifier()
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
for _ in range(150):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    optimizer.step()
model.eval()
with torch.inference_mode():
    accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()

batch = torch.export.Dim("batch", min=1, max=1024)
program = torch.export.export(model, (torch.from_numpy(x_test[:2]),), dynamic_shapes=({0: batch},))
torch.export.save(program, "model.pt2")
np.save("test_images.npy", x_test)
np.save("test_labels.npy", y_test)
json.dump({"accuracy": float(accuracy), "test_images": len(x_test)}, open("metrics.json", "w"))
print(f"test accuracy {accuracy:.4f} on {len(x_test)} images; exported model.pt2")
