"""Chat: pick a model, ask, watch the answer stream in; citations are links that open the document at the
page, an unsupported answer says so; past conversations on the side; stop an answer."""

from __future__ import annotations

import html
import queue
from pathlib import Path
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
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.answers import chat
from core.library.store import Library
from core.models import gguf_models
from desktop.tasks import sentence
from desktop.view import View


class ChatSession(QThread):
    """A conversation's Chat (its llama.cpp worker and its own Library) in a thread of its own."""

    token = Signal(str)
    answered = Signal(object)  # {"answer": chat.Answer, "citations": the rows chat.messages() gives}
    failed = Signal(str)

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
        for signal in (self.token, self.answered, self.failed):
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
                        answer = session.ask(question, on_token=self.token.emit)
                        self.conversation_id = session.conversation_id
                        assert session.conversation_id is not None  # kept with the answer
                        kept = chat.messages(library, session.conversation_id)[-1]["citations"]
                        self.answered.emit({"answer": answer, "citations": kept})
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
        right_layout.addLayout(ask_row)

        new = QPushButton("New conversation")
        new.clicked.connect(self.new_conversation)
        self.conversations = QListWidget()
        self.conversations.setWordWrap(True)
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

    # -- models and conversations ---------------------------------------------------------------------
    def refresh(self) -> None:
        def work(library: Library, task) -> dict[str, Any]:
            return {"models": gguf_models.models(library), "conversations": chat.conversations(library)}

        self.main.tasks.start(work, self._show, latest_only=True)

    def _show(self, loaded: dict[str, Any]) -> None:
        chosen = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        for m in reversed(loaded["models"]):
            origin = f"job {m.job_id}, step {m.step}" if m.source == "export" else "imported"
            self.model.addItem(f"{m.path.name} ({origin})", str(m.path))
        self.model.setCurrentIndex(max(self.model.findData(chosen), 0))
        self.model.blockSignals(False)
        self.conversations.clear()
        for row in reversed(loaded["conversations"]):
            item = QListWidgetItem(f"{row['title'][:60]}\n{row['created'][:16].replace('T', ' ')} · {row['model']}")
            item.setData(256, row["id"])
            self.conversations.addItem(item)
        if self.model.count() == 0:
            self.transcript.setHtml("<p>There is no model yet: export one in Models, or import a GGUF file.</p>")

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
                self.blocks.append(_answer_html(row["content"], bool(row["supported"]), row["citations"]))
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

    # -- asking ---------------------------------------------------------------------------------------
    def ask(self) -> None:
        question = self.question.text().strip()
        model = self.model.currentData()
        if not question or not model or not self.ask_button.isEnabled():
            return
        if self.session is None:
            self.session = ChatSession(self.main.data_dir, Path(model), self.conversation_id, self)
            self.session.token.connect(self._token)
            self.session.answered.connect(self._answered)
            self.session.failed.connect(self._failed)
            self.session.start()
        self.question.clear()
        self.blocks.append(_question_html(question))
        self.streaming = ""
        self._render()
        self._busy(True)
        self.session.ask(question)

    def _busy(self, busy: bool) -> None:
        self.ask_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def _token(self, text: str) -> None:
        self.streaming += text
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)

    def _answered(self, result: dict[str, Any]) -> None:
        answer = result["answer"]
        self.blocks.append(_answer_html(answer.text, answer.supported, result["citations"]))
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


def _label(citation: dict[str, Any]) -> str:
    first, last = citation["page_first"], citation["page_last"]
    return f"{citation['document']} " + (f"p. {first}" if first == last else f"pp. {first}-{last}")


def _question_html(question: str) -> str:
    return f"<p style='margin-top:12px'><b>You:</b> {html.escape(question)}</p>"


def _answer_html(text: str, supported: bool, citations: list[dict[str, Any]]) -> str:
    parts = [f"<p>{html.escape(text) or '<i>(no answer)</i>'}</p>"]
    cited = []
    for citation in citations:
        label = html.escape(f"[{_label(citation)}]")
        if citation["document_id"] is None:  # the document was removed: the citation stays, as text
            cited.append(label)
            continue
        url = QUrl(f"cite:{citation['document_id']}/{citation['page_first']}")
        url.setQuery((citation["quote"] or citation["chunk_text"])[:400])
        cited.append(f"<a href='{html.escape(url.toString(QUrl.ComponentFormattingOption.FullyEncoded))}'>{label}</a>")
    if cited:
        parts.append(f"<p style='color:#555'>Cited: {' '.join(cited)}</p>")
    if not supported and text != chat.NOT_IN_DOCUMENTS:
        parts.append("<p style='color:#a33'>Unsupported: no citation in this answer is backed by the passages.</p>")
    return "".join(parts)
