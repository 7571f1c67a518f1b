"""Settings: the library's folder (data directory) and where the log is; and the remote GPU hosts: add one,
trust its key after comparing its fingerprint (a dialog; never on its own), check it, remove it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from core.library.folder import check_folder
from core.sizes import format_size
from desktop.view import View

if TYPE_CHECKING:
    from core.jobs.hosts import Host
    from core.library.store import Library
    from desktop.tasks import Task

DATA_DIR_SETTING = "data_dir"
OCR_SETTING = "read_scans"


def reads_scans() -> bool:
    """Whether documents added read their pages without text (scans, images) by OCR: on unless turned off."""
    return bool(QSettings().value(OCR_SETTING, True, type=bool))


HOST_COLUMNS = ("Name", "Address", "Python", "Folder there", "USD/h")


class SettingsView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.data_dir = QLineEdit()
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._pick)
        apply = QPushButton("Use this folder")
        apply.clicked.connect(self._apply)
        row = QHBoxLayout()
        row.addWidget(self.data_dir, 1)
        row.addWidget(browse)
        row.addWidget(apply)
        self.log = QLabel()
        self.log.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Library folder", row)
        form.addRow("Log", self.log)
        self.ocr = QCheckBox("Read scanned pages and images (PNG, JPEG, TIFF) by OCR, on this computer")
        self.ocr.setToolTip(
            "Off: a scan or an image is refused when added, as it was before Tunedesk read scans. Pages read by "
            "OCR are marked in the library, and those it read with low confidence are named."
        )
        self.ocr.setChecked(reads_scans())
        self.ocr.toggled.connect(lambda on: QSettings().setValue(OCR_SETTING, on))
        form.addRow("Scans", self.ocr)
        self.engine = QLabel("…")
        self.engine.setWordWrap(True)
        form.addRow("Training here", self.engine)
        note = QLabel(
            "The library folder holds library.db, a copy of each document, datasets, training jobs and models. "
            "Tunedesk connects to nothing but the hosts below (when you train there), the package indexes "
            "when it sets up training on this computer (once), and, if you give a Hugging Face model id, the "
            "Hugging Face hub; your documents go nowhere but to the hosts below, and are wiped there when a job ends."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: gray")

        self.hosts = QTableWidget(0, len(HOST_COLUMNS))
        self.hosts.setHorizontalHeaderLabels(HOST_COLUMNS)
        self.hosts.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.hosts.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.hosts.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.hosts.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.hosts.verticalHeader().hide()
        self.name = QLineEdit(placeholderText="a10g")
        self.target = QLineEdit(placeholderText="ubuntu@203.0.113.7 or ubuntu@host:2222")
        self.key = QLineEdit(placeholderText="empty: the SSH agent and ~/.ssh's keys")
        key_browse = QPushButton("Key file…")
        key_browse.clicked.connect(self._pick_key)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(key_browse)
        self.python = QLineEdit("python3")
        self.price = QDoubleSpinBox(minimum=0.0, maximum=1000.0, decimals=3, singleStep=0.1)
        self.price.setSpecialValueText("not given")
        add = QPushButton("Add host")
        add.clicked.connect(self.add_host)
        host_form = QFormLayout()
        host_form.addRow("Name", self.name)
        host_form.addRow("User and address", self.target)
        host_form.addRow("Key", key_row)
        host_form.addRow("Python there", self.python)
        host_form.addRow("Price per hour (USD)", self.price)
        host_form.addRow("", add)
        trust = QPushButton("Trust…")
        trust.clicked.connect(self.trust_selected)
        check = QPushButton("Check")
        check.clicked.connect(self.check_selected)
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove_selected)
        host_buttons = QHBoxLayout()
        for button in (trust, check, remove):
            host_buttons.addWidget(button)
        host_buttons.addStretch(1)
        self.host_status = QLabel()
        self.host_status.setWordWrap(True)
        # What a host is, said here: the app is used where the project's docs/ folder is not.
        hosts_box = QGroupBox("Remote GPU hosts")
        hosts_box.setToolTip(
            "A Linux computer with an NVIDIA GPU that you reach over SSH, a rented cloud GPU for instance: give "
            "its address, user and key, then Trust… shows its host key for you to confirm. A job there gets a "
            "copy of its dataset, trains, sends its checkpoints back, and is wiped from the host when it ends."
        )
        hosts_layout = QVBoxLayout(hosts_box)
        hosts_layout.addWidget(self.hosts, 1)
        hosts_layout.addLayout(host_buttons)
        hosts_layout.addWidget(self.host_status)
        hosts_layout.addLayout(host_form)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(hosts_box, 1)
        self.host_names: list[str] = []

    def refresh(self) -> None:
        self.data_dir.setText(str(self.main.data_dir))
        self.log.setText(str(self.main.data_dir / "tunedesk.log"))

        def work(library: Library, task: Task) -> list[Host]:
            from core.jobs.hosts import hosts

            return hosts(library)

        self.main.tasks.start(work, self._show_hosts, latest_only=True)
        data_dir = self.main.data_dir

        def engine(library: Library, task: Task) -> str:
            from core.jobs.runners.engine_env import local_state

            return local_state(data_dir)

        self.main.tasks.start(engine, self.engine.setText, latest_only=True)

    def _show_hosts(self, listed: list[Host]) -> None:
        self.host_names = [h.name for h in listed]
        self.hosts.setRowCount(len(listed))
        for row, h in enumerate(listed):
            price = "" if h.price_per_hour is None else f"{h.price_per_hour:.2f}"
            for column, value in enumerate((h.name, h.where, h.python, h.workdir, price)):
                self.hosts.setItem(row, column, QTableWidgetItem(value))

    # -- hosts ------------------------------------------------------------------------------------------
    def add_host(self) -> None:
        name, target, key = self.name.text().strip(), self.target.text().strip(), self.key.text().strip()
        python, price = self.python.text().strip() or "python3", self.price.value() or None

        def work(library: Library, task: Task) -> Host:
            from core.jobs.hosts import add_host

            return add_host(library, name, target, key=Path(key) if key else None, python=python, price_per_hour=price)

        self.main.tasks.start(work, self._added)

    def _added(self, host: Host) -> None:
        self.host_status.setText(f"Added {host.name} ({host.where}); select it and press Trust… before training there.")
        self.name.clear()
        self.target.clear()
        self.refresh()

    def selected_host(self) -> str | None:
        rows = self.hosts.selectionModel().selectedRows()
        return self.host_names[rows[0].row()] if rows else None

    def trust_selected(self) -> None:
        name = self.selected_host()
        if name is None:
            return

        def work(library: Library, task: Task) -> tuple[str, str]:
            from core.jobs.hosts import fingerprint, host, offered_key

            return name, fingerprint(offered_key(host(library, name)))

        self.main.tasks.start(work, self._confirm)

    def _confirm(self, offered: tuple[str, str]) -> None:
        name, fingerprint = offered
        answer = QMessageBox.question(
            self,
            "Trust this host?",
            f"The host {name} offers a key with the fingerprint\n\n{fingerprint}\n\nCompare it with the one your "
            "provider shows for this machine. Trust it only if they are the same.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            self.host_status.setText(f"{name} is not trusted.")
            return

        def work(library: Library, task: Task) -> str:
            from core.jobs.hosts import trust_host

            return trust_host(library, name, fingerprint)

        self.main.tasks.start(work, lambda trusted: self.host_status.setText(f"{name} is trusted ({trusted})."))

    def check_selected(self) -> None:
        name = self.selected_host()
        if name is None:
            return
        self.host_status.setText(f"Checking {name}…")

        def work(library: Library, task: Task) -> str:
            from core.jobs.hosts import host
            from core.jobs.runners import ssh

            remote = ssh.Remote.to(host(library, name), library.data_dir)
            checked = ssh.preflight(remote)
            engine = ssh.engine_state(remote, checked)
            gpus = "; ".join(checked.gpus) or "no GPU (nvidia-smi): it would train on CPU"
            return (
                f"{name}: Python {checked.python}, {format_size(checked.free_bytes)} free in {checked.workdir}; "
                f"{gpus}; the engine there: {engine}."
            )

        self.main.tasks.start(
            work, self.host_status.setText, on_progress=self.host_status.setText, on_failed=self._check_failed
        )

    def _check_failed(self, sentence: str) -> None:
        self.host_status.setText("")
        self.main.show_error(sentence)

    def remove_selected(self) -> None:
        name = self.selected_host()
        if name is not None:

            def work(library: Library, task: Task) -> Host:
                from core.jobs.hosts import remove_host

                return remove_host(library, name)

            self.main.tasks.start(work, lambda _: self.refresh())

    # -- library folder -------------------------------------------------------------------------------
    def _pick(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Library folder", self.data_dir.text())
        if folder:
            self.data_dir.setText(folder)

    def _pick_key(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Private key file", str(Path.home() / ".ssh"))
        if name:
            self.key.setText(name)

    def _apply(self) -> None:
        folder = Path(self.data_dir.text()).expanduser()
        if folder == self.main.data_dir:
            return

        def use(_: object) -> None:
            QSettings().setValue(DATA_DIR_SETTING, str(folder))  # the next start opens it too
            self.main.set_data_dir(folder)

        def refused(sentence: str) -> None:
            self.main.show_error(sentence)
            self.data_dir.setText(str(self.main.data_dir))  # the field shows the library still in use

        self.main.tasks.start(lambda library, task: check_folder(folder), use, on_failed=refused)
