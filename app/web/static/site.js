// distleech: small progressive enhancements. Every page works without this file;
// it is a file (not inline) because the Content-Security-Policy allows only 'self' scripts.
(function () {
  "use strict";

  // Register form: say while typing that the two passwords differ (the server checks again).
  function checkPasswordsMatch() {
    var first = document.getElementById("password");
    var again = document.getElementById("password_again");
    if (!first || !again) {
      return;
    }
    function check() {
      var differ = again.value !== "" && again.value !== first.value;
      again.setCustomValidity(differ ? "The two passwords differ." : "");
    }
    first.addEventListener("input", check);
    again.addEventListener("input", check);
  }

  // Buttons that undo something for somebody (disable, revoke, replace a passkey) ask
  // first. Without JavaScript the form is sent at once: the button's words say what it does.
  function confirmBeforeSending(event) {
    var button = event.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", checkPasswordsMatch);
  document.addEventListener("submit", confirmBeforeSending);
})();
