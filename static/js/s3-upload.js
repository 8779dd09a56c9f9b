// Direct upload to S3 for the register form (S3 backend only: the form then carries data-direct-upload).
// The form's attributes are read with getAttribute: its "dataset" field shadows form.dataset.
// The file goes from the browser to the bucket in parts through presigned URLs, so no portal server thread waits
// on it: create (portal signs) → S3 CreateMultipartUpload → part URLs (portal signs) → PUT each part → S3
// CompleteMultipartUpload → complete (portal queues the registration) → the registration page.
(function () {
  "use strict";

  var PARALLEL_PARTS = 3;
  var PART_ATTEMPTS = 3;
  // Fields the API names that the form shows under its file input.
  var FILE_FIELDS = { filename: "file", size: "file" };

  function UploadError(message, fields) {
    this.message = message;
    this.fields = fields || {};
  }

  function csrfToken(form) {
    var input = form.querySelector("[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function callApi(form, url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken(form) },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) return data;
        var error = data.error || {};
        throw new UploadError(error.message || "The portal answered HTTP " + response.status + ".", error.fields);
      });
    });
  }

  // One request to S3; resolves with the finished XMLHttpRequest, rejects with S3's own error text.
  function sendToS3(method, url, body, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      if (onProgress) xhr.upload.onprogress = function (evt) { onProgress(evt.loaded); };
      xhr.onload = function () {
        // CompleteMultipartUpload can answer 200 with an <Error> body, so the body is checked as well.
        var failed = xhr.status < 200 || xhr.status >= 300 || /<Error>/.test(xhr.responseText || "");
        if (!failed) return resolve(xhr);
        var code = /<Code>([^<]*)<\/Code>/.exec(xhr.responseText || "");
        var message = /<Message>([^<]*)<\/Message>/.exec(xhr.responseText || "");
        reject(new UploadError("S3 refused the upload (" + (code ? code[1] : "HTTP " + xhr.status) + ")" +
          (message ? ": " + message[1] : ".")));
      };
      xhr.onerror = function () {
        reject(new UploadError("Could not reach S3 (network error, or the bucket's CORS rules do not allow this page)."));
      };
      xhr.send(body);
    });
  }

  function xmlValue(text, tag) {
    var match = new RegExp("<" + tag + ">([^<]*)</" + tag + ">").exec(text || "");
    return match ? match[1] : "";
  }

  function escapeXml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  function showProgress(form, loaded, total) {
    var bar = form.querySelector("progress");
    var label = form.querySelector("[data-progress-label]");
    var percent = total ? Math.floor((loaded / total) * 100) : 100;
    bar.hidden = false;
    bar.value = percent;
    if (label) label.textContent = percent + "% uploaded";
  }

  function clearErrors(form) {
    form.querySelectorAll("p.error[data-upload-field]").forEach(function (el) { el.remove(); });
    var box = form.querySelector("[data-upload-error]");
    box.hidden = true;
    box.textContent = "";
  }

  function showError(form, error) {
    var rest = [];
    Object.keys(error.fields || {}).forEach(function (name) {
      var input = form.querySelector("[name='" + (FILE_FIELDS[name] || name) + "']");
      var field = input && input.closest(".field");
      (error.fields[name] || []).forEach(function (text) {
        if (!field) { rest.push(name + ": " + text); return; }
        var p = document.createElement("p");
        p.className = "error";
        p.dataset.field = FILE_FIELDS[name] || name;
        p.dataset.uploadField = "1";
        p.textContent = text;
        field.appendChild(p);
      });
    });
    var box = form.querySelector("[data-upload-error]");
    box.textContent = rest.length ? rest.join(" ") : error.message;
    box.hidden = false;
    var label = form.querySelector("[data-progress-label]");
    if (label) label.textContent = "";
  }

  function uploadPart(part, file, loadedByPart, onProgress) {
    var blob = file.slice(part.offset, part.offset + part.size);
    var attempt = function (n) {
      return sendToS3("PUT", part.url, blob, function (loaded) {
        loadedByPart[part.part_number] = loaded;
        onProgress();
      }).then(function (xhr) {
        var etag = xhr.getResponseHeader("ETag");
        if (!etag) {
          throw new UploadError("S3 stored a part but its ETag is hidden from this page: the bucket's CORS rule must list ETag under ExposeHeaders.");
        }
        loadedByPart[part.part_number] = part.size;
        onProgress();
        return { part_number: part.part_number, etag: etag };
      }, function (error) {
        if (n >= PART_ATTEMPTS) throw error;
        return attempt(n + 1);
      });
    };
    return attempt(1);
  }

  function uploadDirect(form, file) {
    var values = {
      project: form.elements.project.value,
      dataset: form.elements.dataset.value,
      description: form.elements.description ? form.elements.description.value : "",
      missing_values: form.elements.missing_values ? form.elements.missing_values.value : "",
    };
    var loadedByPart = {};
    var onProgress = function () {
      var loaded = 0;
      Object.keys(loadedByPart).forEach(function (k) { loaded += loadedByPart[k]; });
      showProgress(form, loaded, file.size);
    };
    var created, uploadId, completeUrl;
    var done = [];
    return callApi(form, form.getAttribute("data-direct-upload"), Object.assign({ filename: file.name, size: file.size }, values))
      .then(function (answer) {
        created = answer;
        showProgress(form, 0, file.size);
        return sendToS3("POST", created.create_url, null);
      })
      .then(function (xhr) {
        uploadId = xmlValue(xhr.responseText, "UploadId");
        if (!uploadId) throw new UploadError("S3 did not return an UploadId when the upload started.");
        var numbers = [];
        for (var n = 1; n <= created.part_count; n++) numbers.push(n);
        // Part URLs in batches of 100 (the API's limit), each batch sent PARALLEL_PARTS at a time.
        var batches = [];
        for (var i = 0; i < numbers.length; i += 100) batches.push(numbers.slice(i, i + 100));
        return batches.reduce(function (previous, batch) {
          return previous.then(function () {
            return callApi(form, form.getAttribute("data-upload-parts"), { upload: created.upload, upload_id: uploadId, part_numbers: batch });
          }).then(function (answer) {
            completeUrl = answer.complete_url;
            var queue = answer.parts.slice();
            var lane = function () {
              var part = queue.shift();
              if (!part) return Promise.resolve();
              return uploadPart(part, file, loadedByPart, onProgress).then(function (result) {
                done.push(result);
                return lane();
              });
            };
            var lanes = [];
            for (var k = 0; k < PARALLEL_PARTS; k++) lanes.push(lane());
            return Promise.all(lanes);
          });
        }, Promise.resolve());
      })
      .then(function () {
        done.sort(function (a, b) { return a.part_number - b.part_number; });
        var xml = "<CompleteMultipartUpload>" + done.map(function (p) {
          return "<Part><PartNumber>" + p.part_number + "</PartNumber><ETag>" + escapeXml(p.etag) + "</ETag></Part>";
        }).join("") + "</CompleteMultipartUpload>";
        return sendToS3("POST", completeUrl, xml);
      })
      .then(function () {
        return callApi(form, form.getAttribute("data-upload-complete"), { upload: created.upload });
      })
      .then(function (registration) {
        window.location.assign(registration.url);
      });
  }

  // htmx asks before it posts the form; a chosen file on the S3 backend is sent directly instead.
  document.addEventListener("htmx:confirm", function (evt) {
    var form = evt.detail.elt;
    if (!form || form.id !== "register-form" || !form.getAttribute("data-direct-upload")) return;
    var file = form.elements.file && form.elements.file.files[0];
    if (!file) return;
    evt.preventDefault();
    clearErrors(form);
    if ((form.elements.uri.value || "").trim()) {
      showError(form, new UploadError("", { file: ["choose a file to upload or give a location, not both"] }));
      return;
    }
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    uploadDirect(form, file).catch(function (error) {
      button.disabled = false;
      showError(form, error instanceof UploadError ? error : new UploadError(String(error)));
    });
  });
})();
