"""Training and validation loss by step (QtCharts), with each checkpoint marked and labelled with its
answer score once it has one."""

from __future__ import annotations

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QScatterSeries, QValueAxis
from PySide6.QtCore import QMargins, QPointF, Qt
from PySide6.QtGui import QColor, QPainter


class LossChart(QChartView):
    def __init__(self) -> None:
        chart = QChart()
        chart.setTitle("Loss by step")
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        chart.setMargins(QMargins(10, 10, 90, 10))  # room on the right for the last checkpoint's label
        super().__init__(chart)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.train, self.val, self.checkpoints = QLineSeries(), QLineSeries(), QScatterSeries()
        for series, name in (
            (self.train, "training loss"),
            (self.val, "validation loss"),
            (self.checkpoints, "checkpoints"),
        ):
            series.setName(name)
        for line in (self.train, self.val):
            line.setPointsVisible(True)  # a single point (the first validation loss) draws no line
        self.checkpoints.setMarkerSize(11)
        self.checkpoints.setColor(QColor("#d9822b"))
        self.checkpoints.setPointLabelsVisible(True)
        self.checkpoints.setPointLabelsClipping(False)
        self.step_axis, self.loss_axis = QValueAxis(), QValueAxis()
        self.step_axis.setTitleText("step")
        self.step_axis.setLabelFormat("%d")
        self.loss_axis.setTitleText("loss")
        self.loss_axis.setLabelFormat("%.2f")
        chart.addAxis(self.step_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.loss_axis, Qt.AlignmentFlag.AlignLeft)
        for series in (self.train, self.val, self.checkpoints):
            chart.addSeries(series)
            series.attachAxis(self.step_axis)
            series.attachAxis(self.loss_axis)
        self.labels: dict[int, str] = {}  # checkpoint step -> its label
        self.clear()

    def clear(self) -> None:
        for series in (self.train, self.val, self.checkpoints):
            series.clear()
        # Labels are kept by point index apart from the points: left, a new job's first checkpoint showed
        # the last job's label.
        self.checkpoints.clearPointsConfiguration()
        self.labels.clear()
        self.steps_total = 1
        self.step_axis.setRange(0, 10)
        self.step_axis.setTickCount(6)  # 0, 2, 4, ... 10: whole steps
        self.loss_axis.setRange(0, 1)

    def set_steps_total(self, steps: int) -> None:
        self.steps_total = max(steps, 1)
        self._fit_steps(self.steps_total)

    def add_loss(self, step: int, train: float | None = None, val: float | None = None) -> None:
        if train is not None:
            self.train.append(QPointF(step, train))
        if val is not None:
            self.val.append(QPointF(step, val))
        self._fit()

    def mark_checkpoint(self, step: int, val_loss: float | None, score: float | None = None) -> None:
        """A checkpoint at its validation loss (or the training loss of its step), labelled with its score."""
        trained = {int(p.x()): p.y() for p in self.train.points()}
        y = val_loss if val_loss is not None else trained.get(step, trained[max(trained)] if trained else 0.0)
        self.labels[step] = f"step {step}" + (f" · score {score:.2f}" if score is not None else "")
        points = {int(p.x()): p.y() for p in self.checkpoints.points()} | {step: y}
        self.checkpoints.replace([QPointF(s, v) for s, v in sorted(points.items())])
        for index, s in enumerate(sorted(points)):
            self.checkpoints.setPointConfiguration(
                index, {QScatterSeries.PointConfiguration.LabelFormat: self.labels.get(s, f"step {s}")}
            )
        self._fit()

    def _fit(self) -> None:
        values = [p.y() for series in (self.train, self.val) for p in series.points()]
        if values:
            low, high = min(values), max(values)
            margin = max((high - low) * 0.1, 0.05)
            self.loss_axis.setRange(max(low - margin, 0), high + margin)
        last = max((p.x() for p in self.train.points()), default=0)
        self._fit_steps(max(self.steps_total, last, 1))

    def _fit_steps(self, steps: float) -> None:
        self.step_axis.setRange(0, max(steps, 10))
        self.step_axis.applyNiceNumbers()  # whole, round steps on the axis
