"""Chat: pick a model, ask, watch the answer stream in; citations are links that open the document at the
page, an unsupported answer says so; past conversations on the side; stop an answer."""

from __future__ import annotations

import html
import queue
from dataclasses import dataclass
from pathlib import Path
from textwrap import shorten
from typing import Any

from PySide6.QtCore import Qt, QThread, QUrl, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.answers import chat
from core.library.store import Library
from core.models import gguf_models
from desktop.tasks import Task, sentence
from desktop.view import View

# How much of each source is shown under an answer: enough to tell which clause it is at a glance.
SOURCE_GLIMPSE = 160


@dataclass(frozen=True)
class Listed:
    """What the view lists: the models to ask, the conversations kept."""

    models: list[gguf_models.Model]
    conversations: list[dict[str, Any]]  # chat.conversations' rows


class ChatSession(QThread):
    """A conversation's Chat (its llama.cpp worker and its own Library) in a thread of its own."""

    token = Signal(str)
    answered = Signal(object)  # the answer as kept: the last row chat.messages() gives
    failed = Signal(str)
    doing = Signal(str)  # what the wait before the first token is spent on

    def __init__(self, data_dir: Path, model: Path, conversation_id: int | None, parent=None) -> None:
        super().__init__(parent)
        self.data_dir, self.model, self.conversation_id = data_dir, model, conversation_id
        self.questions: queue.Queue[str | None] = queue.Queue()
        self.chat: chat.Chat | None = None

    def ask(self, question: str) -> None:
        self.questions.put(question)

    def stop_answer(self) -> None:
        if self.chat is not None:
            self.chat.stop()

    def end(self) -> None:
        """Stop any answer and end the conversation's thread (and its worker) without waiting for it."""
        for signal in (self.token, self.answered, self.failed, self.doing):
            signal.disconnect()
        self.stop_answer()
        self.questions.put(None)

    def run(self) -> None:
        try:
            with (
                Library(self.data_dir) as library,
                chat.Chat(library, self.model, conversation_id=self.conversation_id) as session,
            ):
                self.chat = session
                while (question := self.questions.get()) is not None:
                    try:
                        self.doing.emit(f"Searching the documents, then reading {chat.PASSAGES} passages…")
                        session.ask(question, on_token=self.token.emit)
                        self.conversation_id = session.conversation_id
                        assert session.conversation_id is not None  # kept with the answer
                        self.answered.emit(chat.messages(library, session.conversation_id)[-1])
                    except Exception as error:
                        self.failed.emit(sentence(error))
        except Exception as error:  # the model failed to load, say
            self.failed.emit(sentence(error))
        finally:
            self.chat = None


class ChatView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.model = QComboBox()
        self.model.currentIndexChanged.connect(lambda _: self.new_conversation())
        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        self.transcript.anchorClicked.connect(self._open_citation)
        self.question = QLineEdit(placeholderText="Ask about your documents")
        self.question.returnPressed.connect(self.ask)
        self.ask_button = QPushButton("Ask")
        self.ask_button.clicked.connect(self.ask)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop_answer)
        # While no token has come: what the wait is for (the model loading, the prompt being read).
        self.waiting = QLabel()
        self.waiting.setStyleSheet("color: gray")
        self.waiting_bar = QProgressBar(textVisible=False)
        self.waiting_bar.setMaximumSize(120, 12)
        self.waiting_bar.setRange(0, 0)  # how long llama.cpp takes to load or read is not known ahead
        wait_row = QHBoxLayout()
        wait_row.addWidget(self.waiting_bar)
        wait_row.addWidget(self.waiting, 1)
        self._waiting("")
        ask_row = QHBoxLayout()
        ask_row.addWidget(self.question, 1)
        ask_row.addWidget(self.ask_button)
        ask_row.addWidget(self.stop_button)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Model"))
        model_row.addWidget(self.model, 1)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addLayout(model_row)
        right_layout.addWidget(self.transcript, 1)
        right_layout.addLayout(wait_row)
        right_layout.addLayout(ask_row)

        new = QPushButton("New conversation")
        new.clicked.connect(self.new_conversation)
        self.conversations = QListWidget()
        self.conversations.setWordWrap(True)
        self.conversations.setSpacing(4)
        self.conversations.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conversations.itemActivated.connect(self._open_conversation)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(new)
        left_layout.addWidget(self.conversations, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([240, 760])
        QVBoxLayout(self).addWidget(split)

        self.session: ChatSession | None = None
        self.conversation_id: int | None = None
        self.blocks: list[str] = []  # the transcript's finished messages, as HTML
        self.streaming = ""
        self._busy(False)  # no model until the list has loaded

    # -- models and conversations ---------------------------------------------------------------------
    def refresh(self) -> None:
        def work(library: Library, task: Task) -> Listed:
            return Listed(gguf_models.models(library), chat.conversations(library))

        self.main.tasks.start(work, self._show, latest_only=True)

    def _show(self, loaded: Listed) -> None:
        chosen = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        for m in reversed(loaded.models):
            origin = f"job {m.job_id}, step {m.step}" if m.source == "export" else "imported"
            self.model.addItem(f"{m.path.name} ({origin})", str(m.path))
        self.model.setCurrentIndex(max(self.model.findData(chosen), 0))
        self.model.blockSignals(False)
        self.conversations.clear()
        for row in reversed(loaded.conversations):
            item = QListWidgetItem(f"{row['title'][:60]}\n{row['created'][:16].replace('T', ' ')} · {row['model']}")
            item.setData(256, row["id"])
            self.conversations.addItem(item)
        if self.model.count() == 0:
            self.transcript.setHtml("<p>There is no model yet: export one in Models, or import a GGUF file.</p>")
        self._busy(self.session is not None and self.stop_button.isEnabled())

    def new_conversation(self) -> None:
        self.stop()
        self.conversation_id = None
        self.blocks, self.streaming = [], ""
        self._render()

    def _open_conversation(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(256)
        self.stop()
        self.main.tasks.start(
            lambda library, task: chat.messages(library, conversation_id), self._show_messages, latest_only=True
        )
        self.conversation_id = conversation_id

    def _show_messages(self, rows: list[dict[str, Any]]) -> None:
        self.blocks = []
        for row in rows:
            if row["role"] == "user":
                self.blocks.append(_question_html(row["content"]))
            else:
                self.blocks.append(_answer_html(row))
        self._render()

    def stop_answer(self) -> None:
        if self.session is not None:
            self.session.stop_answer()

    def stop(self) -> None:
        if self.session is not None:
            self.session.end()
            self.main.tasks.retire(self.session)
            self.session = None

    def reset(self) -> None:
        self.new_conversation()
        self.conversations.clear()
        self.model.clear()
        self._busy(False)

    # -- asking ---------------------------------------------------------------------------------------
    def ask(self) -> None:
        question = self.question.text().strip()
        model = self.model.currentData()
        if not question or not model or not self.ask_button.isEnabled():
            return
        if self.session is None:
            self._waiting(f"Loading the model {Path(model).name}…")
            self.session = ChatSession(self.main.data_dir, Path(model), self.conversation_id, self)
            self.session.token.connect(self._token)
            self.session.answered.connect(self._answered)
            self.session.failed.connect(self._failed)
            self.session.doing.connect(self._waiting)
            self.session.start()
        self.question.clear()
        self.blocks.append(_question_html(question))
        self.streaming = ""
        self._render()
        self._busy(True)
        self.session.ask(question)

    def _busy(self, busy: bool) -> None:
        if not busy:
            self._waiting("")
        ready = self.model.count() > 0
        self.ask_button.setEnabled(ready and not busy)
        self.ask_button.setToolTip("" if ready else "There is no model yet: export one in Models, or import one.")
        self.stop_button.setEnabled(busy)

    def _waiting(self, what: str) -> None:
        self.waiting.setText(what)
        self.waiting.setVisible(bool(what))
        self.waiting_bar.setVisible(bool(what))

    def _token(self, text: str) -> None:
        if not self.streaming:
            self._waiting("")
        self.streaming += text
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)

    def _answered(self, row: dict[str, Any]) -> None:
        self.blocks.append(_answer_html(row))
        self.streaming = ""
        self._render()
        self._busy(False)
        self.refresh()

    def _failed(self, text: str) -> None:
        self._busy(False)
        self.streaming = ""
        self.main.show_error(text)
        if self.session is not None and not self.session.isRunning():
            self.session = None

    def _render(self) -> None:
        self.transcript.setHtml("".join(self.blocks) + ("<p></p>" if self.streaming == "" else ""))
        self.transcript.moveCursor(QTextCursor.MoveOperation.End)

    def _open_citation(self, url: QUrl) -> None:
        # cite:DOCUMENT_ID/PAGE?passage
        document_id, page = url.path().split("/")
        self.main.open_document(int(document_id), int(page), url.query(QUrl.ComponentFormattingOption.FullyDecoded))


def _label(place: dict[str, Any]) -> str:
    first, last = place["page_first"], place["page_last"]
    return f"{place['document']} " + (f"p. {first}" if first == last else f"pp. {first}-{last}")


def _link(place: dict[str, Any], passage: str) -> str:
    """A citation or a source: a link that opens its page with `passage` marked, or plain text once its
    document has been removed."""
    label = html.escape(f"[{_label(place)}]")
    if place["document_id"] is None:
        return label
    url = QUrl(f"cite:{place['document_id']}/{place['page_first']}")
    url.setQuery(passage[:400])
    return f"<a href='{html.escape(url.toString(QUrl.ComponentFormattingOption.FullyEncoded))}'>{label}</a>"


def _question_html(question: str) -> str:
    return f"<p style='margin-top:12px'><b>You:</b> {html.escape(question)}</p>"


def _answer_html(row: dict[str, Any]) -> str:
    """An answer as kept (a row of chat.messages()): its text, its verified citations, and the passages it
    was given, so that the user can check any answer, an unsupported one first of all."""
    text, stopped = row["content"], bool(row["stopped"])
    empty = "(stopped before it answered)" if stopped else "(no answer)"
    parts = [f"<p>{html.escape(text) or f'<i>{empty}</i>'}</p>"]
    cited = [_link(c, c["quote"] or c["chunk_text"] or "") for c in row["citations"]]
    if cited:
        parts.append(f"<p style='color:#555'>Cited: {' '.join(cited)}</p>")
    if stopped:
        parts.append("<p style='color:#555'>Stopped before the model finished.</p>")
    elif not row["supported"] and text != chat.NOT_IN_DOCUMENTS:
        parts.append("<p style='color:#a33'>Unsupported: no citation in this answer is backed by the passages.</p>")
    if row["passages"]:
        parts.append("<p style='color:#555; margin-bottom:0'>Sources it was given:</p>")
    for passage in row["passages"]:
        text = passage["chunk_text"] or ""
        glimpse = html.escape(shorten(" ".join(text.split()), SOURCE_GLIMPSE, placeholder=" …"))
        parts.append(f"<p style='color:#555; margin:2px 0 0 16px'>{_link(passage, text)} {glimpse}</p>")
    return "".join(parts)
