// A table body whose rows are keyed by record id and rebuilt only when what
// they show changed.
//
// The expense and invoice lists are redrawn on every store change, and
// changes arrive from other tabs at any moment: rebuilding every row each
// time would drop the focus from the button someone is on and reset a
// Delete that is waiting for its confirming click.

export class KeyedRows {
  #tbody;
  #build;
  #signature;
  /** id -> {tr, sig}; `sig` is what the row last showed. */
  #rows = new Map();

  /**
   * @param build (record) => <tr>
   * @param signature (record) => string; equal strings mean the row need not change
   */
  constructor(tbody, { build, signature }) {
    this.#tbody = tbody;
    this.#build = build;
    this.#signature = signature;
  }

  /** Brings the rows in line with `records`, in their order. */
  render(records) {
    const seen = new Set();
    let prev = null;
    for (const r of records) {
      seen.add(r.id);
      const sig = this.#signature(r);
      let row = this.#rows.get(r.id);
      if (!row || row.sig !== sig) {
        const tr = this.#build(r);
        if (row) row.tr.replaceWith(tr);
        row = { tr, sig };
        this.#rows.set(r.id, row);
      }
      // Move only rows that are out of place, so focus inside a row survives.
      const expected = prev ? prev.nextSibling : this.#tbody.firstChild;
      if (expected !== row.tr) this.#tbody.insertBefore(row.tr, expected);
      prev = row.tr;
    }
    for (const [id, row] of this.#rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.#rows.delete(id);
      }
    }
  }

  clear() {
    this.#rows.clear();
    this.#tbody.replaceChildren();
  }
}
