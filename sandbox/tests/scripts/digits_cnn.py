"""DigitsCNN: written by hand to the script contract (docs/contracts.md, section 1) for the engine's tests.

Train it here with `python digits_cnn.py --data ./digits` (needs torch and buildx_runtime.py beside it).
"""

from __future__ import annotations

import buildx_runtime as rt
import torch
from torch import nn

# Data
DATASET = "digits"
INPUT_SHAPE = (1, 8, 8)  # (C, H, W) after preprocessing
NUM_CLASSES = 10
TRAIN_TRANSFORM = rt.Compose([rt.RandomCrop(8, padding=1), rt.Normalize((0.5,), (0.5,))])
EVAL_TRANSFORM = rt.Compose([rt.Normalize((0.5,), (0.5,))])

# Hyperparameters
EPOCHS = 10
BATCH_SIZE = 64
LEARNING_RATE = 0.003
OPTIMIZER = "adam"  # sgd | adam | adamw
MOMENTUM = 0.9  # SGD only
WEIGHT_DECAY = 0.0
LR_SCHEDULE = "step"  # none | step | cosine
LABEL_SMOOTHING = 0.0
SEED = 42
VAL_SPLIT = 0.1  # share of the training data held out for validation


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)  # (B, 16, 8, 8)
        self.relu1 = nn.ReLU()  # (B, 16, 8, 8)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)  # (B, 32, 8, 8)
        self.relu2 = nn.ReLU()  # (B, 32, 8, 8)
        self.pool1 = nn.MaxPool2d(kernel_size=2)  # (B, 32, 4, 4)
        self.flatten = nn.Flatten()  # (B, 512)
        self.fc1 = nn.Linear(512, 10)  # (B, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, 16, 8, 8)
        x = self.relu1(x)  # (B, 16, 8, 8)
        x = self.conv2(x)  # (B, 32, 8, 8)
        x = self.relu2(x)  # (B, 32, 8, 8)
        x = self.pool1(x)  # (B, 32, 4, 4)
        x = self.flatten(x)  # (B, 512)
        x = self.fc1(x)  # (B, 10)
        return x


def build_model() -> nn.Module:
    return DigitsCNN()


def train(model: nn.Module, data: rt.Data) -> None:
    rt.seed_everything(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    start_epoch = rt.resume(model=model, optimizer=optimizer, scheduler=scheduler)  # 0 on a fresh run

    for epoch in range(start_epoch + 1, EPOCHS + 1):
        model.train()
        total_loss = torch.zeros((), device=data.device)
        correct = torch.zeros((), device=data.device)
        for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=TRAIN_TRANSFORM):
            with rt.autocast():
                logits = model(x)  # (B, NUM_CLASSES)
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(y)  # stays on the device: no sync per batch
            correct += (logits.argmax(1) == y).sum()
        if scheduler is not None:
            scheduler.step()
        val_loss, val_acc = rt.evaluate(
            model, data.val, loss_fn=loss_fn, batch_size=BATCH_SIZE, transform=EVAL_TRANSFORM
        )
        rt.report_epoch(
            epoch=epoch,
            epochs=EPOCHS,
            train_loss=total_loss.item() / len(data.train),
            train_acc=correct.item() / len(data.train),
            val_loss=val_loss,
            val_acc=val_acc,
            lr=optimizer.param_groups[0]["lr"],
        )
        rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, metric=val_acc)


if __name__ == "__main__":
    rt.main(
        build_model, train, dataset=DATASET, eval_transform=EVAL_TRANSFORM, val_split=VAL_SPLIT, seed=SEED
    )
