import type { ComponentChildren } from 'preact';
import { useEffect, useId, useRef } from 'preact/hooks';

/**
 * A modal question before something that cannot be undone (cancel, rerun):
 * the browser's <dialog>, which keeps focus inside, closes on Escape and
 * gives the focus back. The safe answer has the focus first.
 */
export function ConfirmDialog(props: { open: boolean; title: string; children: ComponentChildren; confirm: string; dismiss: string; onConfirm: () => void; onClose: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  // Several dialogs live on one page: each names itself by its own heading.
  const titleId = useId();
  useEffect(() => {
    const element = dialog.current;
    if (!element) return;
    if (props.open && !element.open) element.showModal();
    if (!props.open && element.open) element.close();
  }, [props.open]);
  return (
    <dialog ref={dialog} class="confirm" aria-labelledby={titleId} onClose={props.onClose}>
      <form method="dialog">
        <h2 id={titleId}>{props.title}</h2>
        <div class="confirm-body">{props.children}</div>
        <div class="actions">
          <button type="submit" value="dismiss" autofocus>{props.dismiss}</button>
          <button
            type="button"
            class="danger"
            onClick={() => {
              dialog.current?.close();
              props.onConfirm();
            }}
          >
            {props.confirm}
          </button>
        </div>
      </form>
    </dialog>
  );
}
