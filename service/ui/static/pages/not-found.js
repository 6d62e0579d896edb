import { add, h } from "/ui/dom.js";

export async function render(main, { setTitle }) {
  setTitle("Not found");
  add(main, h("h1", {}, "No such page"), h("p", {}, h("a", { href: "/" }, "Back to the home page")));
}
