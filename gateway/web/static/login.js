// carry ?next= into the form, as text (never as HTML)
const next = new URLSearchParams(location.search).get("next");
if (next && next.startsWith("/") && !next.startsWith("//")) document.getElementById("next").value = next;
